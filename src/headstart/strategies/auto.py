"""auto: pick a strategy from the data's size and from how well the frozen features already fit the labels.

Signals, from one pass of the frozen body over train and val (cached: the chosen strategy's head stage
reuses it, so the pick costs a few seconds of scikit-learn on top of extraction), on at most
SIGNAL_ROWS training and validation examples:

- per_class: the smallest class count in the training split;
- probe: 5-fold cross-validated accuracy of logistic regression on the training features;
- probe_val: the same probe fitted on train, scored on val;
- knn: leave-one-out 5-NN (cosine) accuracy on the training features;
- baseline: the modality's classical model without transfer (`Modality.classical_baseline`: raw-pixel
  logistic regression for images, ...), fitted on train, scored on val, where the modality offers one.

Strength is chance-corrected, kappa = (acc - chance) / (1 - chance) with chance the majority-class fraction,
so "strong" means the same on 2 classes and on 100.

The rule, first match wins:

1. untrained body that passes its inputs through (a wide MLP), and
   fewer than FEW_VALIDATION_ROWS validation rows     -> linear-probe  (the linear model on its raw inputs: too few
                                                                          rows to tell a fine-tuned body from it)
   with more                                           -> two-stage     (the linear model first, then all layers,
                                                                          kept only when validation says so)
   other untrained body                                -> finetune      (no features to transfer)
2. not classification (regression)                     -> two-stage     (the default; no accuracy signals)
3. baseline given and max(probe_val, knn) < baseline - margin, margin = max(BASELINE_MARGIN, 2 standard
   errors of the difference of two accuracies on the validation rows)
                                                       -> two-stage     (the features don't fit the task: the
                                                                          body must change, all layers train)
4. per_class < FEW and probe kappa >= STRONG           -> linear-probe  (too few examples for fine-tuning to
                                                                          pay; the features already separate)
5. per_class < FEW                                     -> setfit        (too few examples to fine-tune body and
                                                                          head on, and the features do not yet
                                                                          separate: contrastive pairs, n^2 of
                                                                          them, reshape the body first)
6. per_class < SOME and probe kappa >= STRONG          -> lp-ft         (a good head start, fine-tuned at one
                                                                          small rate to keep the features)
7. otherwise                                           -> two-stage

Why rule 5: at 8 examples per class, fine-tuning a body with a fresh head falls far below a frozen probe
(RoBERTa-large 58.8 against a frozen mpnet probe's 84.2 on SentEval-CR, in SetFit's published runs), while
SetFit's pair fine-tuning gains 4 to 11 points over that probe (88.5 on CR, 48.8 against 37.8 on Emotion).

What it picked and why is recorded in the run's stage notes ("auto", shown in the fit summary and
metrics.json) and in model.json's "training".
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from headstart.strategies.registry import STRATEGIES, register_strategy
from headstart.train.stage import Stage

if TYPE_CHECKING:
    from headstart.train.context import FitContext

FEW = 20  # examples in the smallest class below which fine-tuning rarely pays
# Validation rows below which a validation loss cannot tell a body trained from scratch from the linear model it starts
# from: on Carseats' US == No stores with 20, 40 and 80 training rows (4, 8 and 16 validation rows) two-stage from the
# linear start lost 0.30, 0.05 and 0.07 R² to ridge on the same rows (benchmarks/tabular.py, 2026-12-06); with 60
# (benchmarks/tables.py) it was level with the linear model on the linear tables and ahead on the non-linear one.
FEW_VALIDATION_ROWS = 30
SOME = 100  # ... below which a strong probe is fine-tuned gently (lp-ft) rather than with two-stage
STRONG = 0.8  # chance-corrected probe accuracy that counts as "the features already fit"
BASELINE_MARGIN = 0.05  # accuracy by which the classical baseline must beat the features to call them unfit
SIGNAL_ROWS = 2000  # at most this many train (and val) rows feed the signals


def _kappa(acc: float, chance: float) -> float:
    return (acc - chance) / (1 - chance) if chance < 1 else 0.0


def baseline_margin(a: float, b: float, n_val: int) -> float:
    """How far the baseline must be ahead to count: BASELINE_MARGIN, or two standard errors of the difference of
    two accuracies on n_val rows when that is wider (on 10 validation rows one row is 0.1: noise, not a verdict)."""
    if n_val <= 0:
        return float("inf")
    p = (a + b) / 2
    return max(BASELINE_MARGIN, 2 * float(np.sqrt(2 * p * (1 - p) / n_val)))


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if n > limit:
        idx = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return idx


def signals(ctx: FitContext) -> dict:
    """The measurements the rule reads (classification, pre-trained body): the body's pass on all of torch's threads,
    then scikit-learn on one BLAS thread (train/probe.py). The thread limit also caps torch's OpenMP pool, which
    would run the extraction on one core and change its float sums from those of a fit that extracts elsewhere."""
    from headstart.train.probe import single_threaded_blas
    from headstart.train.stages import cached_features

    train_x = cached_features(ctx, "train").numpy()
    val_x = cached_features(ctx, "val").numpy() if ctx.data.val else None
    return single_threaded_blas(_signals)(ctx, train_x, val_x)


def _signals(ctx: FitContext, train_x: np.ndarray, val_x: np.ndarray | None) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.select.scores import knn_accuracy, probe_accuracy
    from headstart.train.probe import standardized_logistic_layer

    seed = ctx.cfg.seed
    train_y = np.asarray([y for _, y in ctx.data.train])
    tr = _subset(len(train_y), SIGNAL_ROWS, seed)
    counts = np.bincount(train_y, minlength=len(ctx.data.classes))
    present = counts[counts > 0]
    out = {
        "train": len(train_y), "classes": int(len(present)), "per_class": int(present.min()) if len(present) else 0,
        "chance": round(float(present.max() / present.sum()), 4) if len(present) else 1.0,
    }
    if len(present) < 2 or out["per_class"] < 2:
        return out
    out["probe"] = round(probe_accuracy(train_x[tr], train_y[tr], seed=seed), 4)
    out["knn"] = round(knn_accuracy(train_x[tr], train_y[tr]), 4)
    if val_x is not None:
        val_y = np.asarray([y for _, y in ctx.data.val])
        va = _subset(len(val_y), SIGNAL_ROWS, seed)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(train_x[tr], train_y[tr])
        out["probe_val"] = round(float(probe.score(val_x[va], val_y[va])), 4)
        ctx.frozen_probe = standardized_logistic_layer(probe, len(ctx.data.classes))
        out["val"] = len(va)
        try:
            baseline = ctx.modality.classical_baseline([ctx.data.train[i] for i in tr], [ctx.data.val[i] for i in va], "classification")
        except Exception as err:  # a baseline is a hint, never a reason to fail the fit
            baseline, out["baseline_error"] = None, f"{type(err).__name__}: {err}"[:200]
        if baseline:
            out["baseline_name"], out["baseline"] = baseline[0], round(float(baseline[1]), 4)
    return out


def decide(ctx: FitContext, s: dict) -> tuple[str, str]:
    """(strategy name, reason) by the rule in this module's docstring."""
    if ctx.backbone.starts_linear:
        if len(ctx.data.val) < FEW_VALIDATION_ROWS:
            return "linear-probe", (f"the body is untrained and {len(ctx.data.val)} validation rows (< {FEW_VALIDATION_ROWS}) "
                                    "cannot tell its training from the linear model on the raw inputs it passes through: "
                                    "that model (ridge or logistic regression) it is")
        return "two-stage", ("the body is untrained and passes its inputs through: the head is solved on them first (the "
                             "classical linear model), then every layer trains and must beat it on validation")
    if not ctx.backbone.pretrained:
        return "finetune", "the body is untrained: there are no features to transfer, every layer must learn"
    if ctx.data.task != "classification":
        return "two-stage", f"{ctx.data.task}: no accuracy signals, the default applies"
    if "probe" not in s:
        return "two-stage", f"too few examples to measure the features ({s['per_class']} in the smallest class)"
    kappa = _kappa(s["probe"], s["chance"])
    probe = f"probe {s['probe']:.2f} (chance-corrected {kappa:.2f}), kNN {s['knn']:.2f}"
    if "baseline" in s:
        best = max(s.get("probe_val", 0.0), s["knn"])
        if best < s["baseline"] - baseline_margin(best, s["baseline"], s.get("val", 0)):
            return "two-stage", (f"the frozen features fit the task worse ({best:.2f} on val) than {s['baseline_name']} "
                                 f"({s['baseline']:.2f}): the body must change, so all layers fine-tune")
    if s["per_class"] < FEW and kappa >= STRONG:
        return "linear-probe", (f"{s['per_class']} examples in the smallest class (< {FEW}) and a strong {probe}: "
                                "fine-tuning would mostly overfit")
    if s["per_class"] < FEW:
        return "setfit", (f"{s['per_class']} examples in the smallest class (< {FEW}) and a {probe} that is not strong: "
                          "the body is fine-tuned on same/other-class pairs first, then the head is solved")
    if s["per_class"] < SOME and kappa >= STRONG:
        return "lp-ft", (f"a strong {probe} with {s['per_class']} examples in the smallest class (< {SOME}): "
                         "the solved head, then every layer at one small rate")
    why = "the probe is not strong" if kappa < STRONG else f"enough examples ({s['per_class']} in the smallest class)"
    return "two-stage", f"{why}: {probe}; head first, then discriminative fine-tuning"


class AutoPick(Stage):
    """Measure, pick a registered strategy, record why, then run that strategy's stages."""

    name = "auto"

    def cost(self, ctx: FitContext) -> float:
        from headstart.train.stages import HeadOnFeatures

        # Planned as extraction + two-stage; corrected once the pick is known.
        return HeadOnFeatures().extraction_cost(ctx) + self._training_cost(ctx, "two-stage")

    @staticmethod
    def _training_cost(ctx: FitContext, name: str) -> float:
        return sum(s.cost(ctx) for s in STRATEGIES.get(name).stages())

    def uses_validation(self, ctx: FitContext) -> bool:
        picked = ctx.model_notes.get("picked")
        return picked is None or any(s.uses_validation(ctx) for s in STRATEGIES.get(picked).stages())

    def expand(self, ctx: FitContext) -> list[Stage]:
        """Measure, pick, record why, and return the picked strategy's stages (fitting.py runs them)."""
        from headstart.train.stages import HeadOnFeatures

        start = time.perf_counter()
        needs_features = ctx.backbone.pretrained and ctx.data.task == "classification"
        measured = signals(ctx) if needs_features else {}
        picked, reason = decide(ctx, measured)
        ctx.stage_notes[self.name] = {"picked": picked, "reason": reason, "summary": f"picked {picked}: {reason}",
                                      "signals": measured, "seconds": round(time.perf_counter() - start, 2)}
        ctx.model_notes["picked"] = picked
        stages = STRATEGIES.get(picked).stages()
        ctx.progress.total += sum(s.cost(ctx) for s in stages) - self._training_cost(ctx, "two-stage")
        if not needs_features:  # the extraction planned for the signals will not happen
            ctx.progress.total -= HeadOnFeatures().extraction_cost(ctx) * (not any(isinstance(s, HeadOnFeatures) for s in stages))
        return stages

    def run(self, ctx: FitContext) -> None:
        from headstart.train.stages import run_stage

        for stage in self.expand(ctx):
            run_stage(stage, ctx)


@register_strategy(
    "auto",
    "picks linear-probe, setfit, lp-ft, two-stage or finetune from the data size, a cross-validated probe, kNN and the "
    "modality's classical baseline on the cached features; records why",
)
def auto() -> list:
    return [AutoPick()]
