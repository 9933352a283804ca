"""The backbone contract: how raw items become tensors, features [N, D], and ordered layer groups."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the tensor a backbone expects (eval transform; augmentation builds on it)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def with_size(self, size: int) -> "Preprocess":
        return Preprocess(size, self.mean, self.std, self.interpolation, self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(int(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d["interpolation"], float(d["crop_pct"]))


class Backbone(nn.Module):
    """A pre-trained body with its top removed.

    Subclasses set `preprocess`, `feature_dim`, `weights_id` (identity of the weights, for the feature cache)
    and implement `forward_features`, `layer_groups` and `spec` (JSON that rebuilds the architecture).
    """

    preprocess: Preprocess
    feature_dim: int
    weights_id: str
    name: str

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [N, ...] -> [N, D]
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def layer_groups(self) -> list[list[nn.Module]]:
        """Ordered groups of modules, input side first (stem ... last stage)."""
        raise NotImplementedError

    def spec(self) -> dict:
        raise NotImplementedError

    def cache_key(self) -> str:
        return f"{self.name.replace(':', '_').replace('/', '_')}-{self.weights_id}-{self.preprocess.key()}"
