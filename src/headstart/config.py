"""One dataclass per run: every choice resolved, written as config.yaml, read back by `load`."""
from __future__ import annotations

import dataclasses
import difflib
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from headstart.errors import UserError


BN_MODES = ("auto", "frozen", "all-frozen", "train")
MODEL_ONLY_OPTIONS = ("adapt_to", "resume")  # what rank, compare and lr-find refuse: they score the labeled data, save no model
REFIT_MODES = ("auto", "always", "never")
SERVE_MAX_INPUTS = 256  # inputs in one request to `serve`: more are split by the client, so none holds the model long
FLIP_MODES = ("auto", "on", "off")
TASKS = ("auto", "classification", "regression", "multilabel")
BALANCE_MODES = ("weights", "sampler")
# Lightning's precisions, less transformer-engine's (a library headstart does not install)
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# The options with a fixed set of values (--head and --modality: their registries; --strategy: fit's, by name).
CHOICE_OPTIONS = {"task": TASKS, "balance": BALANCE_MODES, "refit": REFIT_MODES, "flip": FLIP_MODES, "bn": BN_MODES,
                  "precision": PRECISIONS, "accelerator": ACCELERATORS}
# The numeric options: (integer?, the test, what is allowed as the error says it). None, where it is the default,
# means "the backbone's default" (TRAINING_DEFAULTS) or "from the data", and always passes.
COUNT = (True, lambda v: v >= 1, ">= 1")  # a whole number of things: epochs, rows, pixels
POSITIVE = (False, lambda v: v > 0, "> 0")
NUMERIC_OPTIONS = {
    "max_length": COUNT,
    "clip_seconds": POSITIVE,
    "sample_rate": COUNT,
    "val_fraction": (False, lambda v: 0 <= v < 0.9, "in [0, 0.9)"),
    "test_fraction": (False, lambda v: 0 <= v < 0.9, "in [0, 0.9)"),
    "seed": (True, lambda v: 0 <= v < 2**32, f"in [0, {2**32 - 1}]"),  # numpy's: Lightning's ValueError past it
    "image_size": COUNT,
    "batch_size": COUNT,
    "num_workers": (True, lambda v: v >= 0, ">= 0 (0: load in the main process)"),
    "head_epochs": COUNT,
    "head_lr": POSITIVE,
    "head_patience": (True, lambda v: v >= 0, ">= 0 (0: off)"),
    "epochs": COUNT,
    "lr": (False, lambda v: v > 0, "> 0 or 'auto'"),
    "lr_mult": (False, lambda v: v >= 1, ">= 1 (1: one rate for every group)"),
    "weight_decay": (False, lambda v: v >= 0, ">= 0 (0: off)"),
    "warmup": (False, lambda v: 0 <= v <= 1, "a fraction of the steps in [0, 1]"),
    "patience": (True, lambda v: v >= 0, ">= 0 (0: off)"),
    "label_smoothing": (False, lambda v: 0 <= v < 1, "in [0, 1) (0: off)"),
    "freeze_until": (True, lambda v: v >= 0, ">= 0 (0: nothing frozen)"),
    "ulmfit_factor": (False, lambda v: v >= 1, ">= 1 (1: one rate for every group)"),
    "l2sp_alpha": (False, lambda v: v >= 0, ">= 0 (0: no pull)"),
    "pair_rounds": COUNT,
    "pair_batch_size": COUNT,
    "lora_rank": COUNT,
    "lora_alpha": POSITIVE,
    "num_nodes": COUNT,
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_choice(name: str, value, allowed) -> None:
    """One line for a value outside a fixed set, with the closest allowed one as a hint."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"{flag(name)} must be one of {', '.join(allowed)}, not {value!r}{hint}")


def check_number(name: str, value) -> None:
    integer, test, allowed = NUMERIC_OPTIONS[name]
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, kind) and not isinstance(value, bool) and test(value):
        return
    raise UserError(f"{flag(name)} must be {'an integer' if integer else 'a number'} {allowed}, not {value!r}")


def check_devices(devices) -> None:
    """Lightning's --devices: a count, -1 (every device), auto, or device indices ("0,1"; "1," is device 1 alone)."""
    text = str(devices).replace(" ", "")
    indices = [p for p in text.split(",") if p]
    count = text.isdigit() and int(text) >= 1  # Lightning refuses 0 devices with a traceback
    listed = "," in text and bool(indices) and all(p.isdigit() for p in indices)
    if text in ("auto", "-1") or count or listed:
        return
    raise UserError(f"--devices must be a count >= 1, -1 (all), auto, or device indices such as 0,1; not {devices!r}")


# Training defaults that depend on the body being transferred: None in FitConfig means "the backbone's
# default_hparams, else these" (tuned for pre-trained CNNs). A transformer wants a far lower rate than a CNN,
# a from-scratch MLP more epochs; the backbone module says so, no `if modality` anywhere.
TRAINING_DEFAULTS = {
    "batch_size": 32,
    "head_epochs": 60,
    "head_lr": 3e-3,
    "epochs": 10,
    "lr": 1e-3,
    "lr_mult": 10.0,
    "weight_decay": 0.01,
    "warmup": 0.1,
    # 0: fine-tuning runs its whole schedule. Its rate anneals (warm-up, cosine) over the planned epochs and the best
    # epoch by validation loss is restored, so stopping early only saves time, and a patience of 3 stopped in the
    # noisy middle: tf_flowers 0.695 -> 0.785 and the digits demo 0.967 -> 1.000 when the schedule finished
    # (benchmarks/README.md, "Let the schedule finish"). The tabular MLP's 200 epochs keep a patience of 20.
    "patience": 0,
    "label_smoothing": 0.1,
    "pair_batch_size": 32,  # setfit's pair steps; a sentence transformer's default is SetFit's 16 (backbones/text.py)
}


@dataclass
class FitConfig:
    data: str
    model: str = "auto"  # "auto": the modality's default backbone (efficientnet_lite0, minilm-l6, ...)
    strategy: str = "auto"  # measures the frozen features, then picks a strategy (strategies/auto.py)
    head: str = "linear"
    out: str | None = None
    force: bool = False
    resume: bool = False  # continue an interrupted fit in `out` from its last saved epoch (train/callbacks.py)
    weights: str | None = None  # a local weights file for the backbone (.safetensors, or .pth read weights_only)
    # data
    modality: str = "auto"  # "auto": detected from the data (image, text, audio, tabular)
    task: str = "auto"  # "auto": classification, multilabel for "cat;dog" labels, regression for a numeric tabular target
    text_column: str = "text"
    label_column: str = "label"
    label_separator: str = ";"  # multi-label: "cat;dog" in a label column is two labels
    balance: str | None = None  # class imbalance: "weights" (loss weighted by inverse frequency) or "sampler"
    target: str | None = None  # tabular: the column to predict (its presence makes a CSV tabular)
    max_length: int | None = None  # text: tokens per text (None: from the training texts' lengths)
    clip_seconds: float | None = None  # audio: clips padded/cropped to this (None: from the clips' lengths)
    sample_rate: int = 16000  # audio: everything is resampled to this
    # unlabeled inputs of the domain the model will predict on (paths, as predict reads them): the saved head is
    # aligned to their features (adaptation.py)
    adapt_to: list | str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    image_size: int | None = None  # None: chosen from the images' native size (see data.sizing)
    flip: str = "auto"  # images: horizontal flips while fine-tuning: on, off, auto (checked on the data: train/augment_check.py)
    crop_scale: float | str = "auto"  # images: random crops keep this fraction to all of the area (auto: 0.35 unless that hides the class)
    batch_size: int | None = None 
    num_workers: int | None = None  # None: from the machine's cores
    # stage 1: the new head on cached features of the frozen body
    head_epochs: int | None = None 
    head_lr: float | None = None 
    head_patience: int = 8
    # stage 2: fine-tuning
    epochs: int | None = None 
    lr: float | str | None = None  # "auto": the learning-rate range test picks it # peak rate of the top layer group (and the head)
    lr_mult: float | None = None # discriminative rates: the stem trains at lr / lr_mult, groups between geometric
    weight_decay: float | None = None 
    warmup: float | None = None # fraction of steps spent warming up, then cosine decay
    patience: int | None = None  # early stopping on validation loss after N epochs without a lower one; 0: off
    label_smoothing: float | None = None # fine-tuning loss only
    bn: str = "auto"  # BatchNorm: "auto" (all-frozen after a trained head, else frozen), "frozen", "all-frozen", "train" (README)
    freeze_until: int | None = None  # layer groups with index < this stay frozen while fine-tuning
    # strategy-specific (see strategies/ and train/variants.py)
    ulmfit_factor: float = 2.6  # ulmfit: each lower layer group's rate is the one above divided by this
    l2sp_alpha: float = 0.01  # l2-sp: strength of alpha/2 * ||w - w0||^2 towards the pre-trained body
    pair_rounds: int = 10  # setfit: positive and negative partners drawn per training example
    pair_batch_size: int | None = None  # setfit: pairs per optimizer step (None: the backbone's default, else 32)
    refit: str = "auto"  # the saved model learns from train + val (once with a test split): auto (few labels), always, never (fitting.py)
    lora_rank: int = 8  # lora: rank r of the adapters
    lora_alpha: float = 16.0  # lora: scaling alpha (adapter output times alpha / r)
    lora_targets: str | None = None  # lora: comma-separated module-name suffixes (None: attention q/v, else 1x1 convs + linears)
    # engine (Lightning Trainer)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # "auto": bf16-mixed on a GPU, 32-true on the CPU
    compile: bool = False  # torch.compile the image body for fine-tuning, on a GPU only (compiling costs a minute or more)
    cache_dir: str | None = None
    progress: bool = True
    resolved: dict = field(default_factory=dict)  # what "auto" turned into (input size, precision, ...)

    def __post_init__(self) -> None:
        """Every option's value checked here, so the API and each command refuse it before any folder is made."""
        if isinstance(self.lr, str) and self.lr != "auto":
            try:
                self.lr = float(self.lr)
            except ValueError:
                raise UserError(f"--lr must be a number > 0 or 'auto', not {self.lr!r}") from None
        unset = {f.name for f in dataclasses.fields(self) if f.default is None}
        for name in NUMERIC_OPTIONS:
            value = getattr(self, name)
            if not (value is None and name in unset or name == "lr" and value == "auto"):
                check_number(name, value)
        for name, allowed in CHOICE_OPTIONS.items():
            if not (name == "balance" and self.balance is None):  # None: no rebalancing
                check_choice(name, getattr(self, name), allowed)
        # registries, looked up only off the default: importing them loads torch, which `headstart --help` skips
        if self.head != "linear":
            from headstart.heads import HEADS

            check_choice("head", self.head, HEADS.names())
        if self.modality != "auto":
            from headstart.data import MODALITIES

            check_choice("modality", self.modality, ["auto", *MODALITIES.names()])
        if self.crop_scale != "auto":
            try:
                self.crop_scale = float(self.crop_scale)
            except (TypeError, ValueError):
                raise UserError(f"--crop-scale must be a number in (0, 1] or 'auto', not {self.crop_scale!r}") from None
            if not 0 < self.crop_scale <= 1:
                raise UserError(f"--crop-scale must be in (0, 1] or 'auto', not {self.crop_scale}")
        if self.task != "auto":
            self.check_task(self.task)
        check_devices(self.devices)
        self._check_accelerator()

    def check_task(self, task: str) -> None:
        """The options that depend on the task, once it is known (fit calls it again when --task auto resolves)."""
        if self.balance is not None and task in ("regression", "multitask"):
            raise UserError(f"--balance {self.balance} applies to classification and multi-label only, and {self.data} "
                            f"is a {'regression' if task == 'regression' else 'multi-task (several --target columns)'} "
                            "task: drop --balance")
        if self.balance == "sampler" and task == "multilabel":  # the sampler draws by one class per example
            raise UserError("--balance sampler applies to single-label classification only; for multi-label "
                            "use --balance weights")

    def _check_accelerator(self) -> None:
        """Lightning's own error for a GPU that is not there is a MisconfigurationException traceback."""
        if self.accelerator not in ("gpu", "cuda", "mps"):
            return
        import torch

        cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
        if not {"gpu": cuda or mps, "cuda": cuda, "mps": mps}[self.accelerator]:
            raise UserError(f"--accelerator {self.accelerator}: no GPU is visible on this machine; "
                            "use --accelerator cpu or auto")

    def apply_training_defaults(self, backbone_defaults: dict) -> dict:
        """Fill unset training options from the backbone's defaults, else TRAINING_DEFAULTS; returns what was filled."""
        filled = {}
        for name, generic in TRAINING_DEFAULTS.items():
            if getattr(self, name) is None:
                filled[name] = backbone_defaults.get(name, generic)
                setattr(self, name, filled[name])
        return filled

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FitConfig":
        values = yaml.safe_load(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        # A run's record reads on any machine (a GPU run's on a laptop): its accelerator is checked where a fit uses it.
        accelerator = values.pop("accelerator", "auto")
        cfg = cls(**values)
        cfg.accelerator = accelerator
        return cfg

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def uses_gpu(self) -> bool:
        """Whether this run computes on a GPU: --accelerator auto/gpu/cuda and CUDA present."""
        import torch

        return self.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()

    @classmethod
    def check_options(cls, options: dict, command: str = "") -> None:
        """One clear error for keyword options that are not fit options (with the closest names as a hint); `command`
        (rank, compare, lr-find) also refuses the options that only act on a saved model (MODEL_ONLY_OPTIONS)."""
        refused = sorted(k for k in set(options) & set(MODEL_ONLY_OPTIONS) if options[k] not in (None, False)) if command else []
        if refused:
            raise UserError(f"{command} judges the labeled data and saves no model, so {', '.join(refused)} does not "
                            "apply (give it to fit, tune or update)")
        known = cls.field_names()
        unknown = sorted(set(options) - known)
        if unknown:
            hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else name
                     for name in unknown]
            raise UserError(f"unknown option(s): {', '.join(hints)}; `headstart fit --help` lists them")
        if options.get("adapt_to") and not command:
            from headstart.adaptation import check_target_paths

            check_target_paths(options["adapt_to"])  # a typo fails now, not after the whole fit has trained


PRETRAIN_EPOCHS = 10  # pretrain's passes over the inputs: a fit's fine-tuning epochs; contrastive training gains slowly
# FitConfig's options that mean nothing without labels or a strategy: refused by name, not silently ignored.
NOT_PRETRAIN_OPTIONS = ("strategy", "adapt_to", "head", "task", "label_column", "label_separator", "balance",
                        "val_fraction", "test_fraction", "head_epochs", "head_lr", "head_patience", "lr_mult",
                        "patience", "label_smoothing", "bn", "ulmfit_factor", "l2sp_alpha", "pair_rounds",
                        "pair_batch_size", "refit", "lora_rank", "lora_alpha", "lora_targets")


@dataclass
class PretrainConfig(FitConfig):
    """A fit's config (engine, input, epochs, lr, ...) plus what self-supervised training adds."""

    inputs: list = field(default_factory=list)  # every path given (`data` is the first)
    temperature: float = 0.1  # NT-Xent: SimCLR's and MoCo v2's 0.1-0.2; lower sharpens the choice among negatives
    holdout: float = 0.1  # share of the inputs set aside to pick the epoch on (its loss)
    # Images' views add SimCLR's distortions (data/augmentation.py). Its small-image strength (CIFAR-10: 0.5, against
    # ImageNet's 1.0 from scratch): the body starts pre-trained, and strong jitter moves it further from its photos.
    colour: float = 0.5
    blur: float = 0.5  # SimCLR's ImageNet probability

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr == "auto":
            raise UserError("--lr auto sweeps a classification loss; pretrain has no labels: give --lr (its body runs at lr x 0.4)")
        if not 0 <= self.holdout < 0.5:
            raise UserError(f"--holdout must be in [0, 0.5), not {self.holdout}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be positive, not {self.temperature}")
        if not 0 <= self.colour <= 2:
            raise UserError(f"--colour is a strength in [0, 2] (0: no colour distortion), not {self.colour}")
        if not 0 <= self.blur <= 1:
            raise UserError(f"--blur is a probability in [0, 1], not {self.blur}")

    @classmethod
    def check_options(cls, options: dict) -> None:
        refused = sorted(set(options) & set(NOT_PRETRAIN_OPTIONS))
        if refused:
            raise UserError(f"pretrain has no labels or strategy: {', '.join(refused)} do not apply "
                            "(give them to the `fit` that reuses the body)")
        super().check_options(options)
