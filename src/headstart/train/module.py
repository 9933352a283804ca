"""The one LightningModule: any net (a head on cached features, or backbone + head) with given param groups."""
from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn


def warmup_cosine(total_steps: int, warmup_fraction: float):
    """LR multiplier: linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class TransferTask(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        task,
        param_groups: list[dict],
        weight_decay: float,
        warmup: float,
        eval_norms: list[nn.Module] = (),
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.net, self.task = net, task
        self.param_groups = param_groups
        self.weight_decay, self.warmup = weight_decay, warmup
        self.eval_norms = list(eval_norms)
        self.label_smoothing = label_smoothing

    def forward(self, x) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, prefix: str) -> torch.Tensor:
        x, y = batch
        out = self.net(x)
        # Smoothing regularises training only; validation loss stays the plain one early stopping compares.
        smoothing = self.label_smoothing if prefix == "train" else 0.0
        loss = self.task.loss(out, y, smoothing)
        self.log(f"{prefix}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log(f"{prefix}_{self.task.score_name}", self.task.score(out, y), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # These BatchNorm layers keep their pre-trained statistics: eval mode, whatever mode the Trainer
        # put the model in (it switches to train() each epoch).
        for module in self.eval_norms:
            module.eval()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups, weight_decay=self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, self.warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
