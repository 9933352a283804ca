"""The Python API, with the CLI's names: fit, load, models (evaluate/predict are Run methods)."""
from __future__ import annotations

from headstart.fit import fit
from headstart.run import Run, load
from headstart.select import compare, rank
from headstart.tuning import lr_find, tune


def models() -> list[dict]:
    """The registered backbones: name, modality, parameter count (body only), input, offline?, source."""
    from headstart.backbones import BACKBONES

    rows = []
    for name in BACKBONES.names():
        info = BACKBONES.get(name)
        body = info.create(None)
        rows.append({"name": name, "modality": info.modality, "params": sum(p.numel() for p in body.parameters()),
                     "input": body.preprocess.describe(), "offline": info.offline, "source": info.source})
    return rows


__all__ = ["compare", "fit", "load", "lr_find", "models", "rank", "Run", "tune"]
