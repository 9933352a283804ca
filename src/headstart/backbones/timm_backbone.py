"""Any timm architecture as a headstart backbone; layer groups come from timm's own `group_matcher`."""
from __future__ import annotations

import dataclasses

import timm
import torch
from timm.models import group_parameters
from torch import nn

from headstart.backbones.base import Backbone, Preprocess
from headstart.data.image_cache import CachedImageDataset, ImageCache
from headstart.data.augmentation import STANDARD_AUGMENTATION, Augmentation


class TimmBackbone(Backbone):
    def __init__(self, name: str, arch: str, model: nn.Module, weights_id: str, preprocess: Preprocess | None = None):
        super().__init__()
        self.name, self.arch, self.weights_id = name, arch, weights_id
        # channels_last: about 1.7x faster CNN training on CPU here (benchmarks/README.md), also faster on GPU.
        self.model = model.to(memory_format=torch.channels_last)
        self.feature_dim = int(model.num_features)
        self.preprocess = preprocess or preprocess_from_timm(model)
        self.image_cache = ImageCache()  # decoded images, once per run (data/image_cache.py)
        self.compile_training, self._compiled = False, None  # --compile (set by adapt)
        self.augmentation = STANDARD_AUGMENTATION  # fine-tuning's crops and flips (adapt; train/augment_check.py)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_training and self.training and x.is_cuda:  # --compile: fine-tuning steps on a GPU
            if self._compiled is None:
                self._compiled = torch.compile(self._features)  # a function, so state-dict keys stay unprefixed
            return self._compiled(x)
        return self._features(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # forward_head(pre_logits=True) applies the model's own global pooling and flattening.
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def layer_groups(self) -> list[list[nn.Module]]:
        groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
        modules = dict(self.model.named_modules())
        ordered = []
        for _, param_names in sorted(groups.items()):
            owners = dict.fromkeys(name.rsplit(".", 1)[0] if "." in name else "" for name in param_names)
            ordered.append([modules[owner] for owner in owners])
        return ordered

    def dataset(self, inputs: list[str], train: bool):
        return CachedImageDataset(inputs, self.preprocess, train, self.image_cache, self.augmentation)

    def views(self, inputs: list[str], cfg):
        """Fine-tuning's crops and flips plus SimCLR's colour distortion and blur (`--colour`, `--blur`)."""
        aug = dataclasses.replace(self.augmentation, colour=cfg.colour, blur=cfg.blur)
        return CachedImageDataset(inputs, self.preprocess, True, self.image_cache, aug)

    def example_batch(self, n: int = 2) -> torch.Tensor:
        size = self.preprocess.input_size
        return torch.randn(n, 3, size, size)

    def end_run(self) -> None:
        self.image_cache.clear()  # the decoded images last one run, not as long as the returned Run

    def adapt(self, data, cfg) -> dict:
        """Input size from the images' native size (see data/sizing.py) unless --image-size is given; --compile."""
        from headstart.data.sizing import choose_preprocess

        self.compile_training = bool(getattr(cfg, "compile", False))
        native = data.info.get("native_size", 0) if data.modality == "image" else 0
        self.preprocess, why = choose_preprocess(self.preprocess, native, cfg.image_size, cfg.uses_gpu())
        size = self.preprocess.input_size
        # Explicit --flip / --crop-scale apply now; "auto" keeps the standard until fine-tuning checks it.
        flip = {"on": True, "off": False}.get(getattr(cfg, "flip", "auto"), STANDARD_AUGMENTATION.flip)
        scale = getattr(cfg, "crop_scale", "auto")
        self.augmentation = Augmentation(flip, STANDARD_AUGMENTATION.min_scale if scale == "auto" else float(scale))
        return {"input_size": size, "input_size_reason": why, "input": f"{size} px ({why})"}

    def spec(self) -> dict:
        return {"adapter": "timm", "name": self.name, "arch": self.arch, "preprocess": self.preprocess.to_dict()}

    @classmethod
    def from_spec(cls, spec: dict, folder=None) -> "TimmBackbone":
        """The architecture alone (random weights): a saved model's state dict fills it."""
        model = timm.create_model(spec["arch"], pretrained=False, num_classes=0)
        return cls(spec["name"], spec["arch"], model, "restored", Preprocess.from_dict(spec["preprocess"]))


def preprocess_from_timm(model: nn.Module) -> Preprocess:
    cfg = timm.data.resolve_model_data_config(model)
    return Preprocess(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )
