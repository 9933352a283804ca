"""The stages strategies are built from: a head on cached features, and fine-tuning the whole model."""
from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headstart.errors import UserError
from headstart.heads import sole_linear_layer
from headstart.model import TransferModel
from headstart.progress import EVAL_COST, TRAIN_COST
from headstart.train.callbacks import BestWeights, EpochCheckpoint, History, StageProgress
from headstart.train.context import FitContext
from headstart.train.engine import make_trainer, release_memory, seed_stage
from headstart.train.feature_cache import features_of
from headstart.train.memory import train_within_memory
from headstart.train.batches import balanced_sample_weights, labeled_loader
from headstart.train.module import TransferTask
from headstart.train.stage import Stage

HEAD_STEP_COST = 0.002  # a head step on cached features, in image-forward equivalents per sample


def run_stage(stage: Stage, ctx: FitContext) -> None:
    """Run one stage on its own random stream (seed_stage), then collect after a stage that trained the body: its
    activations and optimizer state are what a Lightning fit's reference cycles hold. A head on cached features
    holds little, so it waits for the end of the fit."""
    seed_stage(ctx.cfg.seed, stage.name)
    stage.run(ctx)
    if not isinstance(stage, HeadOnFeatures):
        release_memory()


def cached_features(ctx: FitContext, split: str) -> torch.Tensor:
    """Pooled features of the frozen backbone for one split, computed once (feature cache)."""
    inputs = [x for x, _ in getattr(ctx.data, split)]
    feats, computed, seconds = features_of(ctx.cache, ctx.backbone, ctx.modality, inputs, 2 * ctx.cfg.batch_size,
                                           ctx.device, ctx.num_workers, ctx.progress, split)
    if computed:
        note = ctx.stage_notes.setdefault("features", {"inputs": 0, "seconds": 0.0})
        note["inputs"] += computed
        note["seconds"] = round(note["seconds"] + seconds, 2)
    return feats


def _sample_weights(ctx: FitContext) -> torch.Tensor | None:
    """--balance sampler: class-balanced draws for fine-tuning (single-label classification)."""
    if ctx.cfg.balance != "sampler" or ctx.task.name != "classification":
        return None
    return balanced_sample_weights(_targets(ctx, "train"))


def _targets(ctx: FitContext, split: str) -> torch.Tensor:
    return ctx.task.targets(y for _, y in getattr(ctx.data, split))


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class TrainingStage(Stage):
    """A stage that trains with Lightning: early stopping on validation loss, the best weights restored."""

    def _fit(self, ctx: FitContext, task: TransferTask, loaders, batch_size: int, epochs: int, patience: int,
             unit_cost: float, validate_first: bool = False, stage_callbacks=lambda: []) -> None:
        """Train `task` on `loaders(batch) -> (train, val)`; out of memory, again at half the batch (train/memory.py).
        `stage_callbacks()` makes the stage's own callbacks afresh for each attempt."""
        start = time.perf_counter()
        attempts = []
        checkpoint = ctx.checkpoint_for(self.name)

        def attempt(batch: int, accumulate: int) -> None:
            attempts.append(self._attempt(ctx, task, *loaders(batch), epochs, patience, unit_cost, validate_first,
                                          stage_callbacks(), accumulate, checkpoint))

        memory = train_within_memory(ctx, self.name, task.net, batch_size, attempt)
        trainer, best = attempts[-1]
        ctx.is_global_zero = trainer.is_global_zero
        score = f"val_{ctx.task.score_name}"
        validated = bool(ctx.data.val)  # without validation rows (--val-fraction 0) the last epoch is kept
        ctx.stage_notes[self.name] = {
            # 0: no epoch beat the starting point, which was kept
            "best_epoch": best.best_epoch + 1 if validated else trainer.current_epoch,
            "epochs_run": trainer.current_epoch,
            "best_val_loss": round(best.best_loss, 6) if validated else None,
            **({f"best_{score}": round(best.best_score, 6)} if best.best_score is not None else {}),
            "seconds": round(time.perf_counter() - start, 2),
            "trainable_params": trainable_parameters(task.net),
            "world_size": trainer.world_size,
            **({"memory": memory} if memory else {}),
        }

    def _attempt(self, ctx: FitContext, task: TransferTask, train_loader, val_loader, epochs: int, patience: int,
                 unit_cost: float, validate_first: bool, extra_callbacks: list, accumulate: int, checkpoint=None):
        score = f"val_{ctx.task.score_name}"
        best = BestWeights(score if ctx.task.select_by_score else None)
        # patience 0: no early stopping; the schedule anneals over the planned epochs and the best one is kept anyway
        stopper = [EarlyStopping("val_loss", patience=patience, mode="min")] if patience > 0 else []
        callbacks = [*extra_callbacks, *stopper, best, History(self.name, ctx.history),
                     StageProgress(ctx.progress, self.name, self.cost(ctx), unit_cost), *ctx.extra_callbacks,
                     *([EpochCheckpoint(checkpoint)] if checkpoint else [])]
        trainer = make_trainer(ctx.cfg, epochs, callbacks, accumulate)
        if validate_first and ctx.data.val:  # no validation rows (--val-fraction 0): nothing to compare the start on
            # The starting point (e.g. the head from stage 1) competes with the best epoch: when that epoch does
            # not beat it, it is kept (BestWeights). The patience counts this stage's own epochs, not the head's
            # loss: fine-tuning from a head on frozen features first gets worse (BatchNorm on batch statistics,
            # augmented views) and took up to 5 epochs to pass it (benchmarks/README.md, "Stopping and the best epoch").
            trainer.validate(task, val_loader, verbose=False)
            start_loss, start_score = (float(trainer.callback_metrics[k]) for k in ("val_loss", score))
            best.seed(start_loss, task.net, start_score)
            ctx.history.append({"stage": self.name, "epoch": 0, "val_loss": round(start_loss, 6),
                                score: round(start_score, 6), "lr": 0.0, "seconds": 0.0})
        # --resume: the stage goes on from its last saved epoch; the file is headstart's own, read without unpickling
        resumed = checkpoint if ctx.cfg.resume and checkpoint and checkpoint.exists() else None
        trainer.fit(task, train_loader, val_loader if ctx.data.val else None,  # none: Lightning warns of an empty one
                    ckpt_path=resumed, weights_only=True)
        return trainer, best


class HeadOnFeatures(TrainingStage):
    """Train the new head on the frozen body's cached features: the body never runs per epoch."""

    name = "head"

    def __init__(self, required: bool = True):
        self.required = required  # False: skipped (with a note) when the body is untrained, nothing to transfer

    def accepts(self, backbone) -> bool:
        # starts_linear: an untrained wide body, whose head is first the linear model on the raw inputs it passes on
        return not self.required or backbone.pretrained or backbone.starts_linear

    def applies(self, ctx: FitContext) -> bool:
        if ctx.backbone.pretrained or ctx.backbone.starts_linear:
            return True
        if self.required:
            raise UserError(f"--model {ctx.cfg.model} is an untrained body: a head on its frozen features learns nothing; "
                            "use --strategy finetune, or --model run:DIR to reuse a trained body")
        return False

    def cost(self, ctx: FitContext) -> float:
        n_train, n_val = len(ctx.data.train), len(ctx.data.val)
        return ctx.cfg.head_epochs * (n_train + n_val) * HEAD_STEP_COST

    def uses_validation(self, ctx: FitContext) -> bool:
        """A solved linear head picks its strength by cross-validation on train; a trained head or a source head
        competing with the solve is chosen on validation loss."""
        return sole_linear_layer(ctx.head) is None or ctx.head_from_source

    def extraction_cost(self, ctx: FitContext) -> float:
        return (len(ctx.data.train) + len(ctx.data.val) + len(ctx.data.test)) * EVAL_COST

    def run(self, ctx: FitContext) -> None:
        cfg = ctx.cfg
        if not self.applies(ctx):
            ctx.stage_notes[self.name] = {"skipped": "untrained body: the head trains with it in fine-tuning"}
            return
        train = TensorDataset(cached_features(ctx, "train"), _targets(ctx, "train"))
        if ctx.replayed is not None:
            features, labels = ctx.replayed
            train = TensorDataset(torch.cat([train.tensors[0], features.to(train.tensors[0].dtype)]),
                                  torch.cat([train.tensors[1], ctx.task.targets(labels)]))
            if ctx.task.name == "classification" and ctx.task.class_weights is not None:
                ctx.cfg.resolved["class_weights"] = ctx.task.balance(train.tensors[1].tolist(), len(ctx.data.classes))
        val = TensorDataset(cached_features(ctx, "val"), _targets(ctx, "val"))
        layer = sole_linear_layer(ctx.head)
        if layer is not None:
            self._solve(ctx, layer, train, val)
        else:
            for p in ctx.head.parameters():
                p.requires_grad_(True)
            ctx.head.train()
            task = TransferTask(ctx.head, ctx.task, [{"params": list(ctx.head.parameters()), "lr": cfg.head_lr}],
                                weight_decay=1e-4, warmup=0.05)
            self._fit(
                ctx, task,
                lambda batch: (DataLoader(train, batch_size=batch, shuffle=True), DataLoader(val, batch_size=4 * batch)),
                max(cfg.batch_size, 64), cfg.head_epochs, cfg.head_patience, HEAD_STEP_COST / TRAIN_COST,
            )
            ctx.head_trained = True
        if ctx.replayed is not None:
            ctx.stage_notes[self.name]["replayed_rows"] = len(ctx.replayed[1])


    def _solve(self, ctx: FitContext, layer: nn.Linear, train: TensorDataset, val: TensorDataset) -> None:
        """A linear head is fitted to convergence (a convex solve: logistic or ridge regression, CV'd strength).

        A head that came with a run:DIR body for the same task competes: the one with the lower validation loss stays.
        """
        start = time.perf_counter()
        source = {k: v.clone() for k, v in ctx.head.state_dict().items()} if ctx.head_from_source else None
        feats, targets = train.tensors
        if not ctx.backbone.pretrained:  # an untrained wide body: its random features have nothing to give yet
            feats = ctx.backbone.raw_inputs_of(feats)
        chosen = ctx.task.solve_head(layer, feats, targets, seed=ctx.cfg.seed)
        if not ctx.backbone.pretrained:
            chosen["solved_on"] = "the raw inputs the untrained body passes through (its own features left at zero weight)"
        row = {"stage": self.name, "epoch": 1, **self._scores(ctx, train, val)}
        if source is not None:
            solved = {k: v.clone() for k, v in ctx.head.state_dict().items()}
            ctx.head.load_state_dict(source)
            kept = self._scores(ctx, train, val)
            chosen["source_head_val_loss"], chosen["solved_val_loss"] = kept["val_loss"], row["val_loss"]
            if kept["val_loss"] <= row["val_loss"]:
                chosen["kept"] = (f"the source run's head: val loss {kept['val_loss']:.4f}, the new solve's "
                                  f"{row['val_loss']:.4f}")
                row.update(kept)
            else:
                ctx.head.load_state_dict(solved)
        seconds = time.perf_counter() - start
        ctx.history.append(row | {"lr": 0.0, "seconds": round(seconds, 2)})
        ctx.progress.advance(0, self.cost(ctx))
        ctx.head_trained = True
        ctx.stage_notes[self.name] = {
            **chosen,
            "best_epoch": 1, "epochs_run": 1, "best_val_loss": row.get("val_loss"), "seconds": round(seconds, 2),
            "trainable_params": sum(p.numel() for p in ctx.head.parameters()), "world_size": 1,
        }
        score = f"val_{ctx.task.score_name}"
        if ctx.task.select_by_score and score in row:
            ctx.stage_notes[self.name][f"best_{score}"] = row[score]

    @staticmethod
    @torch.no_grad()
    def _scores(ctx: FitContext, train: TensorDataset, val: TensorDataset) -> dict:
        row = {}
        for split, (x, y) in (("train", train.tensors), ("val", val.tensors)):
            if not len(y):  # a refit on train + val has no validation split
                continue
            out = ctx.head.eval()(x)
            row[f"{split}_loss"] = round(float(ctx.task.loss(out, y)), 6)
            row[f"{split}_{ctx.task.score_name}"] = round(float(ctx.task.score(out, y)), 6)
        return row


def bn_mode(ctx: FitContext) -> str:
    """--bn, with "auto" resolved: "all-frozen" when fine-tuning starts from a trained head on a pre-trained body.

    That head learned the features of eval-mode BatchNorm (the pre-trained statistics). Training BatchNorm
    switches the body to batch statistics, which halved the head's accuracy on the photo sets before any weight
    moved, and left fine-tuning to recover first: keeping the statistics gave +1.5 to +8 points on tf_flowers,
    hymenoptera and cifar10 (benchmarks/README.md, "BatchNorm after a trained head"). A fresh head or an untrained
    body has no such features to keep: BatchNorm trains in trainable groups ("frozen").
    """
    if ctx.cfg.bn != "auto":
        return ctx.cfg.bn
    return "all-frozen" if ctx.head_trained and ctx.backbone.pretrained else "frozen"


class FineTune(TrainingStage):
    """Train backbone and head on raw inputs with augmentation.

    discriminative=True: each layer group gets its own rate, geometric from lr / lr_mult (stem) to lr (top).
    Groups below `freeze_until` stay frozen. BatchNorm follows `--bn` (`bn_mode`: "auto" is all-frozen after a
    trained head, else frozen): "frozen" keeps BN of frozen groups on
    its pre-trained statistics while BN of trainable groups trains; "all-frozen" keeps every BN layer on its
    pre-trained statistics (Keras' advice); "train" also trains BN inside frozen groups (fastai's train_bn).
    `lr_scale` multiplies every rate, head included (LP-FT fine-tunes at a fraction of the usual rate).

    Variants (train/variants.py: gradual unfreezing, BitFit, L2-SP, LoRA) override the hooks: `body_params`
    (which parameters of a trainable group train), `make_task` (schedule, penalty), `callbacks`, `prepare`
    (before the optimizer is built) and `finish` (after training).
    """

    name = "finetune"

    def __init__(self, discriminative: bool, lr_scale: float = 1.0):
        self.discriminative = discriminative
        self.lr_scale = lr_scale

    def cost(self, ctx: FitContext) -> float:
        return ctx.cfg.epochs * (len(ctx.data.train) * TRAIN_COST + len(ctx.data.val) * EVAL_COST)

    def param_groups(self, ctx: FitContext) -> tuple[list[dict], list[nn.Module]]:
        """Optimizer groups (one per trainable layer group, then the head) and the norms kept in eval mode."""
        cfg, bn = ctx.cfg, bn_mode(ctx)
        groups = ctx.backbone.layer_groups()
        n = len(groups)
        frozen_below = cfg.freeze_until or 0
        param_groups, eval_norms = [], []
        for i, modules in enumerate(groups):
            params = [p for m in modules for p in m.parameters(recurse=False)]
            norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._NormBase)]
            frozen = i < frozen_below
            if bn == "all-frozen" or (frozen and bn == "frozen"):
                eval_norms += norms  # pre-trained running statistics, never updated
            if frozen:
                for p in params:
                    p.requires_grad_(False)
                if bn == "train":  # as fastai's train_bn: norm layers keep learning inside frozen groups
                    params = [p for m in norms for p in m.parameters(recurse=False)]
                else:
                    continue
            else:
                chosen = {id(p) for p in self.body_params(modules)}
                for p in params:
                    p.requires_grad_(id(p) in chosen)
                params = [p for p in params if id(p) in chosen]
            for p in params:
                p.requires_grad_(True)
            param_groups.append({"params": params, "lr": self._lr(cfg, i, n, ctx.backbone.pretrained) * self.lr_scale})
        for p in ctx.head.parameters():
            p.requires_grad_(True)
        param_groups.append({"params": list(ctx.head.parameters()), "lr": self.head_lr(ctx) * self.lr_scale})
        return [g for g in param_groups if g["params"]], eval_norms

    @staticmethod
    def head_lr(ctx: FitContext) -> float:
        """The head's rate: the top group's, or the head stage's when no stage trained it yet.

        A fresh head starts from random weights: at a transformer body's 5e-5 it barely moves in a few epochs
        (chance accuracy after one short epoch was measured), so it learns at --head-lr while the body keeps
        its low rate.
        """
        return ctx.cfg.lr if ctx.head_trained else max(ctx.cfg.lr, ctx.cfg.head_lr)

    def body_params(self, modules: list[nn.Module]) -> list[nn.Parameter]:
        """The parameters of a trainable layer group that train (all of them; BitFit: biases and norms)."""
        return [p for m in modules for p in m.parameters(recurse=False)]

    def prepare(self, ctx: FitContext) -> None:
        """Before the optimizer is built (LoRA injects its adapters here)."""

    def make_task(self, ctx: FitContext, net: nn.Module, param_groups: list[dict], eval_norms: list) -> TransferTask:
        cfg = ctx.cfg
        return TransferTask(net, ctx.task, param_groups, cfg.weight_decay, cfg.warmup, eval_norms, cfg.label_smoothing)

    def callbacks(self, ctx: FitContext, task: TransferTask) -> list:
        return []

    def finish(self, ctx: FitContext) -> None:
        """After training, with the best weights restored (LoRA merges its adapters here)."""

    def _lr(self, cfg, i: int, n: int, pretrained: bool = True) -> float:
        if not self.discriminative or n == 1 or not pretrained:  # an untrained body has nothing to protect
            return cfg.lr
        return cfg.lr / cfg.lr_mult ** ((n - 1 - i) / (n - 1))

    def decide_on_validation(self, ctx: FitContext) -> None:
        from headstart.train.augment_check import choose_augmentation

        choose_augmentation(ctx)  # images: are the standard crops and flips label-preserving here?

    def run(self, ctx: FitContext) -> None:
        from headstart.tuning import resolve_auto_lr

        self.decide_on_validation(ctx)
        if ctx.cfg.bn == "auto":
            ctx.cfg.resolved.setdefault("bn", bn_mode(ctx))
        self.prepare(ctx)
        resolve_auto_lr(ctx, self)  # --lr auto: the range test on this stage's own groups, now that the head is trained
        cfg = ctx.cfg
        net = TransferModel(ctx.backbone, ctx.head, ctx.data.classes, task=ctx.task).train()  # Lightning keeps modules' modes
        param_groups, eval_norms = self.param_groups(ctx)
        task = self.make_task(ctx, net, param_groups, eval_norms)
        workers = ctx.num_workers
        loader_args = {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": ctx.device.type == "cuda"}
        ctx.backbone_changed = True
        inputs = ctx.data.inputs
        self._fit(
            ctx, task,
            lambda batch: (
                labeled_loader(ctx.backbone, inputs["train"], _targets(ctx, "train"), True, batch,
                               sample_weights=_sample_weights(ctx), **loader_args),
                labeled_loader(ctx.backbone, inputs["val"], _targets(ctx, "val"), False, 2 * batch, **loader_args)),
            cfg.batch_size, cfg.epochs, cfg.patience, 1.0, validate_first=ctx.head_trained,
            stage_callbacks=lambda: self.callbacks(ctx, task),
        )
        self.finish(ctx)
