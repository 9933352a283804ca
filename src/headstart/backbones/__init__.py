"""Backbone registry: `create_backbone("efficientnet_lite0")`, `create_backbone("timm:resnet50")`."""
from __future__ import annotations

from headstart.backbones import bundled, timm_hub  # noqa: F401 - registration by import
from headstart.backbones.base import Backbone, Preprocess
from headstart.backbones.registry import ADAPTERS, BACKBONES, SOURCES
from headstart.backbones.timm_backbone import TimmBackbone

ADAPTERS.register("timm")(TimmBackbone.from_spec)


def create_backbone(name: str, weights: str | None = None) -> Backbone:
    """A pre-trained backbone by registered name, or `source:name` (e.g. `timm:resnet50`)."""
    if name in BACKBONES:
        return BACKBONES.get(name).create(weights)
    if ":" in name:
        source, rest = name.split(":", 1)
        return SOURCES.get(source)(rest, weights)
    return BACKBONES.get(name).create(weights)  # raises the "unknown backbone" error with the choices


def rebuild_backbone(spec: dict) -> Backbone:
    """The architecture described by a saved spec, without downloading anything."""
    return ADAPTERS.get(spec["adapter"])(spec)


__all__ = ["Backbone", "Preprocess", "create_backbone", "rebuild_backbone", "BACKBONES", "SOURCES"]
