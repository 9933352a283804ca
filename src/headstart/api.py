"""The Python API, with the CLI's names: fit, load, models (evaluate/predict are Run methods)."""
from __future__ import annotations

from headstart.fit import fit
from headstart.run import Run, load


def models() -> list[dict]:
    """The registered backbones: name, parameter count (body only), input size, offline?, source."""
    import timm

    from headstart.backbones import BACKBONES

    rows = []
    for name in BACKBONES.names():
        info = BACKBONES.get(name)
        net = timm.create_model(name, pretrained=False, num_classes=0)
        size = int(timm.data.resolve_model_data_config(net)["input_size"][-1])
        rows.append({"name": name, "params": sum(p.numel() for p in net.parameters()), "input_size": size,
                     "offline": info.offline, "source": info.source, "modality": info.modality})
    return rows


__all__ = ["fit", "load", "models", "Run"]
