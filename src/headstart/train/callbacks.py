"""Callbacks: keep the best weights, record history, drive the run's progress bars."""
from __future__ import annotations

import copy
import time

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from headstart.progress import EVAL_COST, TRAIN_COST, RunProgress


class BestWeights(L.Callback):
    """Keep the weights of the best validation epoch in memory; restore them at the end.

    Best is the highest task score (`score`: accuracy, F1), ties broken by the lower loss; without a score
    (regression) the lowest loss. The score first, because fine-tuning learns label-smoothed targets, which cap
    its confidence: its validation loss stays above that of a head solved without smoothing even when it gets
    more validation items right (the digits demo: accuracy 1.000 against the head's 0.961, loss 0.137 against
    0.119), so a loss-only choice kept the worse model.
    """

    def __init__(self, score: str | None = None):
        self.score = score
        self.best_loss, self.best_score = float("inf"), float("-inf")
        self.best_epoch = -1
        self.state = None

    def _key(self, loss: float, score: float | None) -> tuple:
        return (-score, loss) if self.score is not None and score is not None else (loss,)

    def seed(self, loss: float, net, score: float | None = None) -> None:
        """Start from a known point (epoch 0): later epochs must beat it to replace it."""
        self.best_loss, self.best_score, self.best_epoch = loss, score, -1
        self.state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or "val_loss" not in metrics:
            return
        loss = float(metrics["val_loss"])
        score = float(metrics[self.score]) if self.score in metrics else None
        if self.state is None or self._key(loss, score) < self._key(self.best_loss, self.best_score):
            self.best_loss, self.best_score, self.best_epoch = loss, score, trainer.current_epoch
            self.state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()})

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.state is not None:
            pl_module.net.load_state_dict(self.state)


class History(L.Callback):
    """One row per epoch: stage, epoch, train/val loss and score (accuracy or MAE), learning rate, seconds."""

    def __init__(self, stage: str, rows: list[dict]):
        self.stage, self.rows = stage, rows
        self.t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        lr = max(g["lr"] for g in trainer.optimizers[0].param_groups)
        self.rows.append({
            "stage": self.stage,
            "epoch": trainer.current_epoch + 1,
            **{k: round(float(v), 6) for k, v in sorted(m.items()) if k.startswith(("train_", "val_"))},
            "lr": lr,
            "seconds": round(time.perf_counter() - self.t0, 2),
        })


class StageProgress(L.Callback):
    """A bar per stage over all its epochs' batches, with the whole run's ETA."""

    def __init__(self, progress: RunProgress, stage: str, planned_units: float, unit_cost: float = 1.0):
        self.progress, self.stage = progress, stage
        self.planned, self.unit_cost = planned_units, unit_cost
        self.done_before = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.done_before = self.progress.done
        total = trainer.max_epochs * (trainer.num_training_batches + sum(trainer.num_val_batches))
        self.progress.open(self.stage, total=total, unit="batch")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.progress.advance(1, TRAIN_COST * self.unit_cost * len(batch[1]), epoch=trainer.current_epoch + 1)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self.progress.advance(1, EVAL_COST * self.unit_cost * len(batch[1]))

    def on_train_end(self, trainer, pl_module) -> None:
        # Early stopping leaves planned work undone: the run's total shrinks so its ETA stays honest.
        self.progress.total += (self.progress.done - self.done_before) - self.planned
        self.progress.close()
