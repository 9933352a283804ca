"""Self-supervised training of a body on unlabeled inputs: two views of each input, contrasted with the batch.

SimCLR's objective (Chen et al. 2020, NT-Xent): each input is seen twice, as two random views, and the body
(through a small projection that is thrown away afterwards, SimCLR's finding: the body's own features stay more
general) learns to pick an input's other view among the 2N - 2 views of the other inputs in its batch. The views
come from the body's own training data: an image's random-resized crops and flips (the fine-tuning augmentation,
`--crop-scale`, `--flip`) with SimCLR's colour distortion and blur (`--colour`, `--blur`); for a transformer the same text twice, told apart by dropout alone (SimCSE, Gao et al.
2021); for a table's rows some columns replaced by other rows' values (SCARF, Bahri et al. 2022): each body's
`views`. Starting from pre-trained weights, this continues pre-training on the user's domain (Reed et al. 2022,
"Self-Supervised Pretraining Improves Self-Supervised Pretraining"), and on source and target inputs together it is
a domain adaptation (Shen et al. 2022, "Connect, Not Collapse").

BatchNorm trains on batch statistics, as in SimCLR: its running statistics move to the new domain. The held-out
inputs' loss, on the same views every epoch, picks the epoch kept.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.backbones.weights import state_digest
from headstart.progress import EVAL_COST, TRAIN_COST
from headstart.train.callbacks import BestWeights, EpochCheckpoint, History, StageProgress
from headstart.train.context import FitContext
from headstart.train.contrastive import SETFIT_LR_SCALE
from headstart.train.engine import make_trainer
from headstart.train.memory import train_within_memory
from headstart.train.module import TransferTask
from headstart.train.stages import FineTune, trainable_parameters

PROJECTION_DIM = 128  # SimCLR's projection output


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for 2N embeddings, rows i and i + N the two views of one input: cross-entropy of picking the
    other view among the other 2N - 1 rows by cosine similarity / temperature."""
    n = len(z) // 2
    z = F.normalize(z.float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partner)


class TwoViews(Dataset):
    """Each item of a training dataset (random augmentation on every access) drawn twice: two views.

    With a `seed`, item i's two views are the same on every access (torch's generator, which every body's views
    draw from, seeded with seed + i): the held-out inputs then judge each epoch on the same pairs, so the epoch kept
    is the one that paired them best, not the one that drew the easiest views."""

    def __init__(self, items: Dataset, seed: int | None = None):
        self.items, self.seed = items, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        if self.seed is None:
            return self.items[i], self.items[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + i)
            return self.items[i], self.items[i]


class ViewBatches:
    """Collates N pairs of views into one batch of 2N (first views, then second views) and N, the pair count."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, batch: list[tuple]):
        return self.collate([a for a, _ in batch] + [b for _, b in batch]), torch.zeros(len(batch))


class ViewTask(TransferTask):
    """NT-Xent on the projected features of two views; the optimizer and schedule (warm-up + cosine) are
    TransferTask's. `net` is the body (what BestWeights keeps); the projection trains beside it."""

    def __init__(self, body: nn.Module, projection: nn.Module, param_groups: list[dict], weight_decay: float,
                 warmup: float, temperature: float):
        super().__init__(body, None, param_groups, weight_decay, warmup)
        self.projection, self.temperature = projection, temperature

    def _step(self, batch, prefix: str) -> torch.Tensor:
        x, pairs = batch
        loss = nt_xent(self.projection(self.net.forward_features(x)), self.temperature)
        self.log(f"{prefix}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(pairs))
        return loss


def projection_of(dim: int) -> nn.Module:
    """SimCLR's projection: a hidden layer as wide as the features, then PROJECTION_DIM."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, PROJECTION_DIM))


class SelfSupervised(FineTune):
    """The body on two views of each unlabeled input (ctx.data.train), at one rate, lr x SETFIT_LR_SCALE (as
    setfit's pair stage: 4e-4 for a CNN's 1e-3, 2e-5 for a transformer's 5e-5, SimCSE's order); the epoch with the
    lowest loss on the held-out inputs (ctx.data.val) is kept."""

    name = "self-supervised"

    def __init__(self, temperature: float):
        super().__init__(discriminative=False, lr_scale=SETFIT_LR_SCALE)
        self.temperature = temperature

    def cost(self, ctx: FitContext) -> float:
        return ctx.cfg.epochs * 2 * (len(ctx.data.train) * TRAIN_COST + len(ctx.data.val) * EVAL_COST)

    def run(self, ctx: FitContext) -> None:
        cfg, backbone = ctx.cfg, ctx.backbone.train()
        param_groups = self.param_groups(ctx)[0][:-1]  # the body's groups; the empty head is not trained
        projection = projection_of(backbone.feature_dim)
        param_groups.append({"params": list(projection.parameters()), "lr": self.head_lr(ctx)})
        peak_lr = param_groups[0]["lr"]
        task = ViewTask(backbone, projection, param_groups, cfg.weight_decay, cfg.warmup, self.temperature)
        train = TwoViews(backbone.views([x for x, _ in ctx.data.train], cfg))
        held_out = TwoViews(backbone.views([x for x, _ in ctx.data.val], cfg), seed=cfg.seed)  # the same pairs each epoch
        workers, start, runs = ctx.num_workers, time.perf_counter(), []
        checkpoint = ctx.checkpoint_for(self.name)  # --resume: the epochs saved before a stop (None: none are saved)
        resumed = checkpoint if cfg.resume and checkpoint and checkpoint.exists() else None

        def loader(items: Dataset, batch: int, shuffle: bool) -> DataLoader:
            return DataLoader(items, batch_size=batch, shuffle=shuffle, drop_last=shuffle and len(items) > batch,
                              collate_fn=ViewBatches(backbone.collate), num_workers=workers,
                              persistent_workers=workers > 0, pin_memory=ctx.device.type == "cuda")

        def attempt(batch: int, accumulate: int) -> None:
            best = BestWeights()
            progress = StageProgress(ctx.progress, self.name, self.cost(ctx), 2.0)
            callbacks = [History(self.name, ctx.history), best, progress, *ctx.extra_callbacks,
                         *([EpochCheckpoint(checkpoint)] if checkpoint else [])]  # last: the others' states include the epoch
            trainer = make_trainer(cfg, cfg.epochs, callbacks, accumulate)
            runs.append((trainer, best))
            # the checkpoint is headstart's own, read without unpickling (as a fit's, train/stages.py)
            trainer.fit(task, loader(train, batch, True), loader(held_out, batch, False) if len(held_out) else None,
                        ckpt_path=resumed, weights_only=True)

        memory = train_within_memory(ctx, self.name, backbone, cfg.batch_size, attempt)
        trainer, best = runs[-1]
        ctx.is_global_zero = trainer.is_global_zero
        ctx.backbone_changed = True
        backbone.weights_id = f"{backbone.weights_id}-ssl-{state_digest(backbone)}"  # cached features stay honest
        losses = [row["val_loss"] for row in ctx.history if row["stage"] == self.name and "val_loss" in row]
        seconds = time.perf_counter() - start
        ctx.stage_notes[self.name] = {
            "objective": f"NT-Xent (SimCLR), temperature {self.temperature}, projection to {PROJECTION_DIM} (discarded)",
            "best_epoch": best.best_epoch + 1 if losses else trainer.current_epoch,
            "held_out_loss_first": round(losses[0], 6) if losses else None,
            "held_out_loss_best": round(min(losses), 6) if losses else None,
            "epochs_run": trainer.current_epoch, "steps": trainer.global_step, "lr": peak_lr,
            "batch_size": cfg.batch_size, "seconds": round(seconds, 2),
            "trainable_params": trainable_parameters(backbone), "world_size": trainer.world_size,
            **({"memory": memory} if memory else {}),
        }
