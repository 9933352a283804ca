"""The backbone contract: how raw items become tensors, features [N, D], and ordered layer groups."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from headstart.config import PRETRAIN_EPOCHS


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

    def describe(self) -> str:
        return f"{self.input_size} px"

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(int(d["input_size"]), tuple(d["mean"]), tuple(d["std"]), d["interpolation"], float(d["crop_pct"]))


class Backbone(nn.Module):
    """A pre-trained body with its top removed: the one interface every modality's body honours.

    Subclasses set `modality` (which loader's inputs they read), `preprocess` (an object with `to_dict()`
    and `key()`), `feature_dim`, `weights_id` (identity of the weights, for the feature cache) and `name`,
    and implement `forward_features`, `layer_groups`, `dataset` and `spec`. Their `from_spec(spec, folder)`
    is registered in ADAPTERS under `spec["adapter"]`.
    """

    modality: str = "image"
    preprocess: Preprocess
    feature_dim: int
    weights_id: str
    name: str
    pretrained: bool = True  # False for a body headstart trains itself from random initialisation
    # An untrained body whose features carry its raw inputs too (a wide MLP): a head is solved on those inputs alone
    # before the body trains (the classical linear model), and fine-tuning must beat that start on validation.
    starts_linear: bool = False
    default_hparams: dict = {}  # training defaults suited to this body (lr, epochs, ...; see config.TRAINING_DEFAULTS)
    pretrain_epochs: int = PRETRAIN_EPOCHS  # `pretrain`'s passes over unlabeled inputs, unless --epochs says otherwise
    cpu_bf16: bool = False  # True: mostly matmuls, so bf16 autocast pays on a CPU with native bf16 (engine.resolve_precision)

    def forward_features(self, x) -> torch.Tensor:  # a collated batch -> [N, D]
        raise NotImplementedError

    def forward(self, x) -> torch.Tensor:
        return self.forward_features(x)

    def raw_inputs_of(self, feats: torch.Tensor) -> torch.Tensor:
        """Of an untrained `starts_linear` body's features, the raw inputs it passes through, the rest zeroed."""
        return feats

    def layer_groups(self) -> list[list[nn.Module]]:
        """Ordered groups of modules, input side first (stem ... last stage)."""
        raise NotImplementedError

    def dataset(self, inputs: list, train: bool) -> Dataset:
        """A Dataset of model-ready tensors for raw inputs; `train=True` adds the training augmentation."""
        raise NotImplementedError

    def views(self, inputs: list, cfg) -> Dataset:
        """Random views of inputs, a new draw on every access, for self-supervised training (`pretrain`, whose
        config `cfg` holds the views' options): the training augmentation unless a body has a better one (images add
        colour distortion and blur; a table's rows have no augmentation: they corrupt columns)."""
        return self.dataset(inputs, train=True)

    def pretrain_caveat(self) -> str | None:
        """What a user should know before continuing this body's pre-training (pretrain prints it), or None."""
        return None

    def collate(self, batch: list):
        """Stack a list of `dataset` items into one batch (text pads dynamically here)."""
        return default_collate(batch)

    def batch_order(self, inputs: list) -> list[int] | None:
        """Optional order for inference batches (e.g. texts sorted by length); None keeps the given order."""
        return None

    def example_batch(self, n: int = 2):
        """A collated batch of `n` valid model inputs (what `collate` returns), for tracing an export."""
        from headstart.errors import UserError

        raise UserError(f"{self.name} ({type(self).__name__}) cannot be exported yet: it has no example inputs to trace")

    def adapt(self, data, cfg) -> dict:
        """Fit preprocessing to the training data (input size, max length, column encoder) before training.

        Returns what was chosen and why, for config.yaml's `resolved`. A reused body keeps what it learned on.
        """
        return {}

    def spec(self) -> dict:
        raise NotImplementedError

    def save_assets(self, folder: Path) -> None:
        """Extra files the body needs to be rebuilt offline (tokenizer, config), written next to model.json."""

    def end_run(self) -> None:
        """The fit is over: drop what was kept only for it (decoded images), not what predicting needs."""

    def cache_key(self) -> str:
        return f"{self.name.replace(':', '_').replace('/', '_')}-{self.weights_id}-{self.preprocess.key()}"


def reinitialize(body: Backbone, seed: int = 0) -> Backbone:
    """The same architecture from random initialisation (the from-scratch control in `compare`), in place."""
    torch.manual_seed(seed)
    for module in body.modules():
        if hasattr(module, "reset_parameters") and module is not body:
            module.reset_parameters()
    body.pretrained = False
    body.weights_id = f"random-{seed}"
    body.name = f"{body.name} (random init)"
    return body
