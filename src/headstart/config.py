"""One dataclass per run: every choice resolved, written as config.yaml, read back by `load`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from headstart.errors import UserError


BN_MODES = ("frozen", "all-frozen", "train")


@dataclass
class FitConfig:
    data: str
    model: str = "auto"  # "auto": the modality's default backbone (efficientnet_lite0, minilm-l6, ...)
    strategy: str = "two-stage"
    head: str = "linear"
    out: str | None = None
    force: bool = False
    weights: str | None = None  # a local weights file for the backbone (.safetensors, or .pth read weights_only)
    # data
    modality: str = "auto"  # "auto": detected from the data (image, text, audio, tabular)
    task: str = "auto"  # "auto": classification, or regression for a numeric tabular target
    text_column: str = "text"
    label_column: str = "label"
    target: str | None = None  # tabular: the column to predict (its presence makes a CSV tabular)
    max_length: int | None = None  # text: tokens per text (None: from the training texts' lengths)
    clip_seconds: float | None = None  # audio: clips padded/cropped to this (None: from the clips' lengths)
    sample_rate: int = 16000  # audio: everything is resampled to this
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    image_size: int | None = None  # None: chosen from the images' native size (see data.sizing)
    batch_size: int = 32
    num_workers: int | None = None  # None: from the machine's cores
    # stage 1: the new head on cached features of the frozen body
    head_epochs: int = 60
    head_lr: float = 3e-3
    head_patience: int = 8
    # stage 2: fine-tuning
    epochs: int = 10
    lr: float = 1e-3  # peak rate of the top layer group (and the head)
    lr_mult: float = 10.0  # discriminative rates: the stem trains at lr / lr_mult, groups between geometric
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of steps spent warming up, then cosine decay
    patience: int = 3  # early stopping on validation loss
    label_smoothing: float = 0.1  # fine-tuning loss only
    bn: str = "frozen"  # BatchNorm of frozen groups: "frozen" (eval statistics, no updates), "all-frozen", "train" (README)
    freeze_until: int | None = None  # layer groups with index < this stay frozen while fine-tuning
    # engine (Lightning Trainer)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # "auto": bf16-mixed on a GPU, 32-true on the CPU
    cache_dir: str | None = None
    progress: bool = True
    resolved: dict = field(default_factory=dict)  # what "auto" turned into (input size, precision, ...)

    def __post_init__(self) -> None:
        if self.bn not in BN_MODES:
            raise UserError(f"--bn must be one of {', '.join(BN_MODES)}, not {self.bn!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 0.9:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 0.9), not {getattr(self, name)}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FitConfig":
        values = yaml.safe_load(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}
