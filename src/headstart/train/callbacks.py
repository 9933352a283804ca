"""Callbacks: keep the best weights, record history, save epochs for --resume, drive the run's progress bars."""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from headstart.progress import EVAL_COST, TRAIN_COST, RunProgress


def _snapshot(net) -> dict:
    """A CPU copy of the net's weights, untouched by later training steps."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})


class BestWeights(L.Callback):
    """Keep the best weights in memory; restore them at the end.

    The stage's epochs compete on validation loss: one training objective, and the smoother signal on a small
    validation split. A starting point given to `seed` (the head that fine-tuning starts from) then competes with
    the best epoch on the task's `score` (accuracy, F1; ties: the lower loss), because their losses come from
    different targets: fine-tuning learns label-smoothed ones, which cap its confidence, so its loss stays above
    a head solved without smoothing even when it gets more right (the digits demo: validation accuracy 1.000
    against the head's 0.961, loss 0.137 against 0.119). Without a score (regression) the lower loss wins.
    """

    def __init__(self, score: str | None = None):
        self.score = score
        self.best_loss, self.best_score, self.best_epoch = float("inf"), None, -1
        self.state = None
        self.start = None  # (loss, score, state) of the seeded starting point

    def seed(self, loss: float, net, score: float | None = None) -> None:
        """Start from a known point (epoch 0): the best epoch must beat it to replace it."""
        self.start = (loss, score, _snapshot(net))

    def on_validation_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or "val_loss" not in metrics:
            return
        loss = float(metrics["val_loss"])
        if loss < self.best_loss:
            score = float(metrics[self.score]) if self.score in metrics else None
            self.best_loss, self.best_score, self.best_epoch = loss, score, trainer.current_epoch
            self.state = _snapshot(pl_module.net)

    def _epoch_beats_start(self) -> bool:
        start_loss, start_score, _ = self.start
        if self.score is None or start_score is None or self.best_score is None:
            return self.best_loss < start_loss
        return (self.best_score, -self.best_loss) > (start_score, -start_loss)

    def state_dict(self) -> dict:  # saved with an epoch (EpochCheckpoint): a resumed stage keeps its best so far
        start = None if self.start is None else dict(zip(("loss", "score", "state"), self.start))
        return {"best_loss": self.best_loss, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "state": self.state, "start": start}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.best_score, self.best_epoch = state["best_loss"], state["best_score"], state["best_epoch"]
        self.state = state["state"]
        self.start = None if state["start"] is None else tuple(state["start"][k] for k in ("loss", "score", "state"))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.start is not None and (self.state is None or not self._epoch_beats_start()):
            self.best_loss, self.best_score, self.state = self.start
            self.best_epoch = -1  # no epoch beat the starting point, which is kept
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

    def state_dict(self) -> dict:  # a resumed stage's history starts with the epochs trained before the stop
        return {"rows": [r for r in self.rows if r["stage"] == self.stage and r["epoch"] > 0]}

    def load_state_dict(self, state: dict) -> None:
        self.rows.extend(state["rows"])


CHECKPOINT_EVERY_S = 60.0  # an epoch is saved when this long has passed since the last save


class EpochCheckpoint(L.Callback):
    """For --resume: the stage's whole state (weights, optimizer, schedule, epoch, the callbacks' own) saved at an
    epoch's end, once CHECKPOINT_EVERY_S have passed since the last save, so a short fit writes nothing and a stop
    loses at most about that long. Written beside, then renamed over: a stop mid-save keeps the last whole one.
    Last in a stage's callbacks, so the others' states include the epoch (not a Lightning Checkpoint: with
    enable_checkpointing off, Lightning refuses those, and on, it adds its own)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.saved_at = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self.saved_at = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if time.perf_counter() - self.saved_at < CHECKPOINT_EVERY_S or trainer.current_epoch + 1 >= trainer.max_epochs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self.saved_at = time.perf_counter()


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
