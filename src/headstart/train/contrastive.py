"""Contrastive body fine-tuning on pairs of examples: SetFit's first step (Tunstall et al. 2022), any modality.

With a handful of examples per class, a fresh head on a fine-tuned body overfits, and a probe keeps whatever
geometry the pre-trained features have. SetFit instead fine-tunes the body on *pairs*: n examples give n^2
pairs, each a target for the cosine similarity of the two embeddings (1: same class, 0: different classes,
CosineSimilarityLoss). Then the head is solved on the reshaped embeddings (HeadOnFeatures). SetFit's own
numbers: all-MiniLM-L6-v2 at 8 examples per class, 71.6 on SentEval-CR and 83.1 on AG News; on mpnet,
88.5 against 84.2 for a probe on the frozen body.

Pairs are drawn per example (SetFit 0.x's `num_iterations`): each training example gets
`--pair-rounds` positive partners from its class and as many negative partners from the others, a fresh
draw seeded by --seed. The body trains one pass over them, `--pair-batch-size` pairs a step (the body's default:
SetFit's 16 for a transformer, 32 otherwise), at one rate, `lr x SETFIT_LR_SCALE`
(2e-5 for a transformer's 5e-5, SetFit's `body_learning_rate`), warm-up then cosine, honouring
--freeze-until. There is no validation split in this stage (SetFit has none); the head stage after it
reports validation.

BatchNorm keeps its pre-trained statistics here whatever --bn says (its affine parameters still train):
SetFit was made for transformers, whose LayerNorm never looks at the batch, and on a CNN the batch
statistics of small pair batches undo the stage: on the tests' coloured squares the pair loss stayed at 0.44
with training BatchNorm and fell to 0.02 with pre-trained statistics (same-class minus other-class cosine
0.26 -> 0.10 against 0.26 -> 0.98).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from headstart.backbones.weights import state_digest
from headstart.errors import UserError
from headstart.progress import TRAIN_COST
from headstart.train.callbacks import History, StageProgress
from headstart.train.context import FitContext
from headstart.train.engine import make_trainer
from headstart.train.memory import train_within_memory
from headstart.train.module import TransferTask
from headstart.train.stages import FineTune, trainable_parameters
from headstart.train.variants import batch_norms

SETFIT_LR_SCALE = 0.4  # SetFit's body rate 2e-5 over the usual transformer fine-tuning rate 5e-5
# One example per class gives no same-class pair: the stage then only pushes the classes' examples apart
NO_POSITIVES = ("; warning: one training example per class, so no same-class pairs: the body only learned to push "
                "examples apart (a few more per class give the pairs that pull a class together)")


def draw_pairs(labels: np.ndarray, rounds: int, seed: int) -> list[tuple[int, int, float]]:
    """(i, j, 1.0) for `rounds` same-class partners of each example, (i, j, 0.0) for as many other-class ones."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    pairs = []
    for i, y in enumerate(labels):
        same = by_class[y][by_class[y] != i]
        other = np.flatnonzero(labels != y)
        for _ in range(rounds):
            if len(same):
                pairs.append((i, int(rng.choice(same)), 1.0))
            if len(other):
                pairs.append((i, int(rng.choice(other)), 0.0))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


class PairBatches:
    """Collates a batch of pairs (i, j, same) into each distinct example once, plus where each partner sits.

    With few examples a batch of pairs repeats them: 32 pairs draw 64 partners, ~40 distinct ones from 64
    examples and at most 16 from 16. The body runs once per distinct example and the loss indexes its
    embeddings, so the gradient is the same (an augmented image shares one view within the batch) for up
    to 4x less compute.
    """

    def __init__(self, items: Dataset, collate):
        self.items, self.collate = items, collate

    def __call__(self, batch: list[tuple[int, int, float]]):
        partners = torch.tensor([[i, j] for i, j, _ in batch])
        distinct, where = torch.unique(partners, return_inverse=True)
        x = self.collate([self.items[int(k)] for k in distinct])
        return x, where[:, 0], where[:, 1], torch.tensor([s for _, _, s in batch])


class PairTask(TransferTask):
    """MSE between the cosine similarity of two embeddings and 1 (same class) or 0 (different); the optimizer,
    schedule (warm-up + cosine) and BatchNorm handling are TransferTask's."""

    def __init__(self, body, param_groups: list[dict], weight_decay: float, warmup: float, eval_norms: list):
        super().__init__(body, None, param_groups, weight_decay, warmup, eval_norms)  # `net`: what callbacks look at

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, first, second, same = batch
        emb = self.net.forward_features(x)  # one row per distinct example (PairBatches)
        # index_select, not emb[first]: the backward of advanced indexing accumulates with parallel atomic adds on
        # a CPU once a batch passes 32k values (32 image pairs x 1280 features), so the same seed trained a
        # different body each run (cifar10, 8 per class: 0.525 / 0.575); index_select's backward adds in order
        loss = F.mse_loss(F.cosine_similarity(emb.index_select(0, first), emb.index_select(0, second)),
                          same.to(emb.dtype))
        self.log("train_pair_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(same))
        return loss


class ContrastiveBody(FineTune):
    """SetFit's body step: one pass over drawn pairs, the body alone (no head), one small rate."""

    name = "pairs"

    def __init__(self):
        super().__init__(discriminative=False, lr_scale=SETFIT_LR_SCALE)

    def accepts(self, backbone) -> bool:
        return backbone.pretrained  # pairs reshape pre-trained features (run says so for an untrained body)

    def _pairs(self, ctx: FitContext) -> list[tuple[int, int, float]]:
        labels = np.asarray([y for _, y in ctx.data.train])
        return draw_pairs(labels, ctx.cfg.pair_rounds, ctx.cfg.seed)

    def uses_validation(self, ctx: FitContext) -> bool:
        return False  # one fixed pass over the pairs: no epoch or weights are chosen on validation

    def cost(self, ctx: FitContext) -> float:
        n, batch = len(ctx.data.train), ctx.cfg.pair_batch_size
        pairs = 2 * ctx.cfg.pair_rounds * n
        distinct = n * (1 - (1 - 1 / n) ** (2 * batch)) if n else 0.0  # expected distinct partners of a batch
        return math.ceil(pairs / batch) * distinct * TRAIN_COST

    def run(self, ctx: FitContext) -> None:
        cfg = ctx.cfg
        if ctx.task.name != "classification":
            raise UserError(f"--strategy setfit pairs examples by class: it needs single-label classification, not "
                            f"{ctx.task.name}; use two-stage or lp-ft")
        if cfg.lr == "auto":
            raise UserError("--lr auto sweeps a classification loss; setfit trains on pairs: give --lr (its body runs at lr x 0.4)")
        if not self.accepts(ctx.backbone):
            raise UserError(f"--strategy setfit reshapes a pre-trained body's features with pairs; --model {cfg.model} is "
                            "untrained: use two-stage (or the default), or --model run:DIR to reuse a trained body")
        self.decide_on_validation(ctx)  # the augmentation check: both images of a pair are augmented views
        pairs = self._pairs(ctx)
        param_groups = self.param_groups(ctx)[0][:-1]  # the body's groups: the head (last) is solved afterwards
        for p in ctx.head.parameters():
            p.requires_grad_(False)
        peak_lr = param_groups[0]["lr"] if param_groups else 0.0  # the schedule rewrites the groups' rates
        backbone = ctx.backbone.train()
        task = PairTask(backbone, param_groups, cfg.weight_decay, cfg.warmup, batch_norms(backbone.modules()))
        workers = ctx.num_workers
        items = backbone.dataset([x for x, _ in ctx.data.train], train=True)
        start, trainers = time.perf_counter(), []

        def attempt(batch: int, accumulate: int) -> None:
            loader = DataLoader(pairs, batch_size=batch, shuffle=False, collate_fn=PairBatches(items, backbone.collate),
                                num_workers=workers, persistent_workers=workers > 0, pin_memory=ctx.device.type == "cuda")
            progress = StageProgress(ctx.progress, self.name, self.cost(ctx), 2.0)
            trainers.append(make_trainer(cfg, 1, [History(self.name, ctx.history), progress, *ctx.extra_callbacks], accumulate))
            trainers[-1].fit(task, loader)

        memory = train_within_memory(ctx, self.name, backbone, cfg.pair_batch_size, attempt)
        trainer = trainers[-1]
        ctx.is_global_zero = trainer.is_global_zero
        ctx.backbone_changed = True
        backbone.weights_id = f"{backbone.weights_id}-pairs-{state_digest(backbone)}"  # cached features stay honest
        positives = sum(1 for _, _, s in pairs if s)
        loss = float(trainer.callback_metrics.get("train_pair_loss", float("nan")))
        seconds = time.perf_counter() - start
        trainable = trainable_parameters(backbone)
        ctx.stage_notes[self.name] = {  # no validation here: a record, not a best epoch (the head stage has that)
            "summary": f"{len(pairs)} pairs ({positives} same-class), pair loss {loss:.4f}, {trainable:,} trainable "
                       f"params, {seconds:.1f} s" + (NO_POSITIVES if pairs and not positives else ""),
            "pairs": len(pairs), "positive_pairs": positives, "rounds_per_example": cfg.pair_rounds,
            "pairs_per_step": cfg.pair_batch_size, "steps": trainer.global_step,
            "final_pair_loss": round(loss, 6), "lr": peak_lr,
            "epochs_run": 1, "seconds": round(seconds, 2), "trainable_params": trainable, "world_size": trainer.world_size,
            **({"memory": memory} if memory else {}),
        }
