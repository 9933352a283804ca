"""Everything a strategy's stages share during one fit."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from headstart.backbones import Backbone
from headstart.config import FitConfig
from headstart.data.base import LabeledData, Modality
from headstart.progress import RunProgress
from headstart.train.feature_cache import FeatureCache


@dataclass
class FitContext:
    cfg: FitConfig
    data: LabeledData
    modality: Modality
    task: object  # headstart.tasks: classification or regression
    backbone: Backbone
    head: nn.Module
    cache: FeatureCache
    progress: RunProgress
    history: list[dict] = field(default_factory=list)
    stage_notes: dict = field(default_factory=dict)  # per stage: best epoch, seconds, trainable params
    backbone_changed: bool = False  # set by a stage that trains backbone weights
    head_trained: bool = False  # set once a stage has trained the new head
    head_from_source: bool = False  # the head is run:DIR's own (same task): the head stage keeps it unless it beats it
    model_notes: dict = field(default_factory=dict)  # how the saved weights came to be (e.g. LoRA merged): model.json "training"
    extra_callbacks: list = field(default_factory=list)  # Lightning callbacks every training stage adds (tune's pruning)
    is_global_zero: bool = True  # False in the extra processes of a multi-device run
    frozen_probe: nn.Module | None = None  # auto's probe on the frozen features, as a head (the augmentation check's judge)
    # Features and labels of rows no longer at hand (update without the old data: the run's reference), from this
    # same frozen body: the head stage learns from them beside the training rows' cached features.
    replayed: tuple[torch.Tensor, list] | None = None
    checkpoints: Path | None = None  # where training stages save epochs for --resume (None: they save none)
    checkpoint_uses: dict = field(default_factory=dict)  # stage name -> times trained (auto may train one name twice)
    adapt_inputs: tuple | None = None  # --adapt-to's readable inputs and those skipped, read before training

    @property
    def num_workers(self) -> int:
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        return min(4, max(0, (os.cpu_count() or 1) - 1))

    @property
    def device(self) -> torch.device:
        """Where single-process work (feature extraction, evaluation) runs."""
        return torch.device("cuda" if self.cfg.uses_gpu() else "cpu")

    def checkpoint_for(self, stage: str) -> Path | None:
        """The file a training stage saves its epochs to, numbered in the order stages train: the same in a resumed
        fit, whose stages run again in that order (the frozen ones from the feature cache)."""
        if self.checkpoints is None:
            return None
        self.checkpoint_uses[stage] = self.checkpoint_uses.get(stage, 0) + 1
        return self.checkpoints / f"{stage}-{self.checkpoint_uses[stage]}.ckpt"

    def features_and_outputs(self, model: nn.Module, inputs: list, stage: str):
        """Features and outputs of `inputs` through the whole `model` (a body pass), shown as the progress stage
        `stage`: evaluation after fine-tuning, `--adapt-to`'s target inputs."""
        from headstart.inference import features_and_outputs
        from headstart.progress import EVAL_COST

        self.progress.open(stage, total=len(inputs), unit=self.modality.input_noun)
        result = features_and_outputs(model, inputs, 2 * self.cfg.batch_size, self.device, self.num_workers,
                                      on_batch=lambda n: self.progress.advance(n, EVAL_COST * n))
        self.progress.close()
        return result
