"""Backbone registry: `create_backbone("efficientnet_lite0")`, `create_backbone("timm:resnet50")`."""
from __future__ import annotations

import importlib
from pathlib import Path

from headstart.backbones.base import Backbone, Preprocess
from headstart.backbones.registry import ADAPTERS, BACKBONES, SOURCES
from headstart.backbones.timm_backbone import TimmBackbone
from headstart.errors import UserError

ADAPTERS.register("timm")(TimmBackbone.from_spec)

# One module per source, registered by import (text, audio and tabular bodies are modules like the others).
for _module in ("bundled", "timm_hub", "run_source", "text", "audio", "tabular"):
    try:
        importlib.import_module(f"headstart.backbones.{_module}")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("headstart"):
            raise


def create_backbone(name: str, weights: str | None = None) -> Backbone:
    """A pre-trained backbone by registered name, or `source:name` (e.g. `timm:resnet50`)."""
    if name in BACKBONES:
        return BACKBONES.get(name).create(weights)
    if ":" in name:
        source, rest = name.split(":", 1)
        return SOURCES.get(source)(rest, weights)
    check_name(name)
    return BACKBONES.get(name).create(weights)


def check_name(name: str) -> None:
    """A plain name that is no registered backbone fails with the choices, or, for a run's folder given as a path,
    with how to reuse it (`run:`)."""
    if name in BACKBONES or ":" in name:
        return
    if (Path(name) / "model" / "model.json").is_file():
        raise UserError(f"{name} is a run's folder, not a backbone name: reuse its body as run:{name}")
    BACKBONES.get(name)  # the "unknown backbone" error with the choices


def rebuild_backbone(spec: dict, folder=None) -> Backbone:
    """The architecture described by a saved spec (and the assets in `folder`), without downloading anything."""
    return ADAPTERS.get(spec["adapter"])(spec, folder)


def backbone_modality(name: str) -> str | None:
    """The modality a backbone name reads, without building it (None when only building it can tell: run:, hf:)."""
    if name in BACKBONES:
        return BACKBONES.get(name).modality
    if ":" not in name:
        return None
    prefix, rest = name.split(":", 1)
    if prefix == "run":
        import json
        from pathlib import Path

        spec = Path(rest) / "model" / "model.json"
        return json.loads(spec.read_text()).get("modality", "image") if spec.is_file() else None
    return getattr(SOURCES.get(prefix), "modality", None) if prefix in SOURCES else None


__all__ = ["Backbone", "Preprocess", "create_backbone", "rebuild_backbone", "BACKBONES", "SOURCES"]
