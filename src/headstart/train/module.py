"""The one LightningModule: any net (a head on cached features, or backbone + head) with given param groups."""
from __future__ import annotations

import math
from typing import Callable

import lightning as L
import torch
from torch import nn

Schedule = Callable[[int], Callable[[int], float]]  # total steps -> (step -> LR multiplier)


def warmup_cosine(total_steps: int, warmup_fraction: float):
    """LR multiplier: linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def slanted_triangular(total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0):
    """LR multiplier of ULMFiT's slanted triangular rate (Howard & Ruder 2018, eq. 3).

    A short linear rise over the first `cut_frac` of the steps from 1/ratio to 1, then a long linear decay
    back to 1/ratio at the last step.
    """
    cut = max(1, math.floor(total_steps * cut_frac))

    def factor(step: int) -> float:
        t = min(step, total_steps)
        p = t / cut if t < cut else 1 - (t - cut) / max(1, total_steps - cut)
        return (1 + p * (ratio - 1)) / ratio

    return factor


def adamw(param_groups: list[dict], weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (float parameters on a CPU or CUDA device). Off CUDA torch picks
    its per-tensor loop by default: one step over MiniLM's 22M parameters took 100 ms that way on a 2-core CPU,
    10 ms fused: a fifth of a setfit pair stage's time on 32 AG News texts went to the loop."""
    params = [p for group in param_groups for p in group["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(param_groups, weight_decay=weight_decay, fused=fused or None)


class TransferTask(L.LightningModule):
    """Loss from the task, AdamW over the given param groups, an LR multiplier per step.

    `schedule(total_steps)` gives the per-step multiplier (default: warm-up + cosine). `penalty`, when given,
    is a module whose forward() returns a scalar added to the training loss and logged as `train_<penalty.name>`
    (e.g. L2-SP); being a submodule it moves to the net's device with it.
    """

    def __init__(
        self,
        net: nn.Module,
        task,
        param_groups: list[dict],
        weight_decay: float,
        warmup: float,
        eval_norms: list[nn.Module] = (),
        label_smoothing: float = 0.0,
        schedule: Schedule | None = None,
        penalty: nn.Module | None = None,
    ):
        super().__init__()
        self.net, self.task = net, task
        self.param_groups = param_groups
        self.weight_decay, self.warmup = weight_decay, warmup
        self.eval_norms = list(eval_norms)  # a callback may change it between epochs (gradual unfreezing)
        self.label_smoothing = label_smoothing
        self.schedule = schedule or (lambda total: warmup_cosine(total, warmup))
        self.penalty = penalty

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
        if prefix == "train" and self.penalty is not None:
            extra = self.penalty()
            self.log(f"train_{self.penalty.name}", extra.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
            loss = loss + extra
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
        optimizer = adamw(self.param_groups, self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
