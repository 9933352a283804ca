"""Data loaders, one module per modality (registered in MODALITIES), plus splits.

`resolve_modality` is the only place that decides which kind of data a fit reads: an explicit --modality,
else the backbone's modality, else the first loader that claims the data.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from headstart.data.base import MODALITIES, LabeledData, Modality
from headstart.errors import UserError

# Registration by import; a modality whose optional dependency is missing is simply not offered.
for _module in ("tabular", "images", "audio", "text"):
    try:
        importlib.import_module(f"headstart.data.{_module}")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("headstart"):
            continue  # not written yet
        raise


def resolve_modality(cfg) -> Modality:
    from headstart.backbones import backbone_modality

    if cfg.modality != "auto":
        return MODALITIES.get(cfg.modality)
    if cfg.model != "auto":
        named = backbone_modality(cfg.model)
        if named:
            _check_kind(cfg, named)
            return MODALITIES.get(named)
    source = Path(cfg.data)
    if not source.exists():
        raise UserError(f"data {source} does not exist")
    for name in MODALITIES.names():
        if MODALITIES.get(name).claims(source, cfg):
            return MODALITIES.get(name)
    hints = "".join(f"; {hint}" for name in MODALITIES.names() if (hint := MODALITIES.get(name).hint(source)))
    raise UserError(f"{source}: cannot tell what kind of data this is{hints}; or pass --modality ({', '.join(MODALITIES.names())})")


def _check_kind(cfg, reads: str) -> None:
    """Data that another modality claims, and the named body's does not, is refused by name: read as the body's
    kind, a folder of images failed as a table without train.csv."""
    source = Path(cfg.data)
    if not source.exists() or MODALITIES.get(reads).claims(source, cfg):
        return
    kind = next((n for n in MODALITIES.names() if MODALITIES.get(n).claims(source, cfg)), None)
    if kind:
        raise UserError(f"{source} holds {kind} data, but --model {cfg.model} reads {reads} data: use a backbone "
                        f"for {kind} data (e.g. {MODALITIES.get(kind).default_backbone}), or pass --modality")


__all__ = ["MODALITIES", "LabeledData", "Modality", "resolve_modality"]
