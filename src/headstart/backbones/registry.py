"""Where backbones are found by name: bundled names, and `source:NAME` prefixes (timm:, later hf:, run:)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from headstart.registry import Registry


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    create: Callable[..., object]  # create(weights: str | None) -> Backbone
    offline: bool
    modality: str
    source: str


BACKBONES: Registry[BackboneInfo] = Registry("backbone")
SOURCES: Registry[Callable[..., object]] = Registry("backbone source")  # prefix -> create(name, weights)
ADAPTERS: Registry[Callable[[dict], object]] = Registry("backbone adapter")  # spec["adapter"] -> from_spec
