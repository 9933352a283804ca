"""`fit --adapt-to INPUTS`: the saved model meets the domain of unlabeled inputs (domain adaptation without labels).

A model trained on one domain (studio photos) and used on another (phone photos, grey scans, another hospital's
scanner) sees body features moved away from those its head learned on. Given unlabeled inputs of that target domain,
each feature is re-expressed in the source's terms: standardised by the target's mean and deviation, then given the
training rows' own. That is per-domain standardisation, AdaBN's idea (Li et al. 2016) applied to the pooled features
of any body (so text, audio and tables too), and CORAL's alignment (Sun et al. 2016) per feature. Each domain is
measured through the final body, after any fine-tuning.

The map is affine, so it folds into the head's first linear layer: the saved model is an ordinary model that takes
target inputs as they come, and predict, export, serve and monitor need nothing new.

It assumes the target holds the classes in about the training proportions. Aligning the target's mean with the
source's also cancels a change in class proportions, which is not a shift to undo: on tf_flowers, a target of two of
the five classes lost 0.19 accuracy with no other change and 0.32 with grey, blurred photos, where all five classes
gained 0.07 (benchmarks/README.md, "Domain adaptation"). Re-estimating the target's class proportions from the aligned
head's predictions and aligning to the source's classes mixed so (Saerens et al. 2002's prior correction) undid the
loss on those sets, but collapsed onto one class on faded digits (0.70 -> 0.25): a head misled by the shift predicts
skewed proportions, and aligning to them skews it further. Damped (six rounds, each one EM step of the proportions,
half-way, with the prior added to the head's outputs) it recovered part of the loss (linear probes over three draws:
flowers' 2 classes 0.61 -> 0.73, faded digits' 2 of 3 classes 0.76 -> 0.91), but sank faded digits of 5 classes, all
present, 0.66 -> 0.50, and no unlabeled measure told the two apart (the kNN domain gap to the source mixed in the
estimated proportions picked wrongly in both directions). So the plain alignment stays, and the summary says what it
assumes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstart.errors import UserError, warn

MIN_TARGET_INPUTS = 20  # fewer give too noisy a mean and deviation per feature to move a head by
GAP_ROWS = 1000  # per domain, at most, for the domain gap's classifier
STD_FLOOR = 0.05  # a target deviation under this share of the source's median deviation counts as this (dead features)


def alignment(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per feature: `target * scale + shift` has the source features' mean and deviation."""
    mean_s, std_s = source.mean(0), source.std(0)
    mean_t, std_t = target.mean(0), target.std(0)
    std_t = std_t.clamp(min=STD_FLOOR * float(std_s.median()) + 1e-8)
    scale = std_s / std_t
    return scale, mean_s - mean_t * scale


def fold_into_head(head: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """head(x * scale + shift) becomes head(x): the first linear layer absorbs the affine map (in place)."""
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise UserError("--adapt-to folds the alignment into the head's first linear layer; this head has none")
    with torch.no_grad():
        if first.bias is not None:
            first.bias += first.weight @ shift.to(first.weight)
        first.weight *= scale.to(first.weight)


def domain_gap(source: torch.Tensor, target: torch.Tensor, seed: int = 0) -> float:
    """Proxy A-distance (Ben-David et al. 2007): 2 (2 acc - 1) for the cross-validated accuracy of a classifier told
    to tell the domains apart on equal numbers of rows: 0 when it cannot, 2 when it always can. The classifier is
    cosine k-nearest-neighbours, which sees the whole distribution: a linear one is blind to any pair of domains with
    equal feature means, which the alignment makes by construction."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(seed)
    n = min(len(source), len(target), GAP_ROWS)
    x = np.concatenate([source.numpy()[rng.choice(len(source), n, replace=False)],
                        target.numpy()[rng.choice(len(target), n, replace=False)]])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    accuracy = cross_val_score(KNeighborsClassifier(min(10, n - 1)), x, np.repeat([0, 1], n), cv=min(5, n)).mean()
    return round(float(max(0.0, 2 * (2 * accuracy - 1))), 3)


def check_target_paths(adapt_to) -> None:
    """Before a fit trains: a --adapt-to path that does not exist (a typo) is refused, since the alignment comes
    after training and failed only then, the fit's work lost. A one-token entry is a path unless 20 or more entries
    were given (a text model may align to texts themselves; a text with spaces is never taken for a path)."""
    entries = [str(p) for p in (adapt_to if isinstance(adapt_to, (list, tuple)) else [adapt_to])]
    for entry in entries:
        one_token = entry.strip() and not any(ch.isspace() for ch in entry)
        looks_like_path = "/" in entry or "\\" in entry or Path(entry).suffix
        if one_token and (looks_like_path or len(entries) < MIN_TARGET_INPUTS) and not Path(entry).exists():
            raise UserError(f"--adapt-to {entry} does not exist; give the unlabeled inputs of the target domain "
                            "(files, folders, a text or table file)")


def target_paths(cfg) -> list[str]:
    return [str(p) for p in (cfg.adapt_to if isinstance(cfg.adapt_to, list) else [cfg.adapt_to])]


def target_inputs(modality, paths: list[str], model) -> tuple[list, list[dict]]:
    """The readable target inputs in `paths` (files, folders, text or table files, as `predict` reads them) and
    those skipped as unreadable (where, why), said in a warning: the alignment measures only what it read."""
    inputs, names = modality.collect_inputs(paths, model)
    bad = modality.unreadable(inputs)
    skipped = [{"where": str(names[i]), "reason": why} for i, why in bad.items()]
    if skipped:
        shown = "; ".join(f"{s['where']} ({s['reason']})" for s in skipped[:3])
        warn(f"--adapt-to: {len(skipped)} unreadable input(s) skipped: {shown}"
             + (f" and {len(skipped) - 3} more (metrics.json adaptation.unreadable)" if len(skipped) > 3 else ""))
    inputs = [x for i, x in enumerate(inputs) if i not in bad]
    if len(inputs) < MIN_TARGET_INPUTS:
        raise UserError(f"--adapt-to {', '.join(paths)}: {len(inputs)} readable input(s); at least {MIN_TARGET_INPUTS} "
                        "unlabeled inputs of the target domain are needed to measure its features")
    return inputs, skipped


def adapt_head(model, source: torch.Tensor, target: torch.Tensor, seed: int = 0) -> dict:
    """Fold the target-to-source alignment into `model`'s head; what it changed, for metrics.json."""
    from headstart.inference import outputs_of_features

    before = np.asarray(outputs_of_features(model, target))
    gap_before = domain_gap(source, target, seed)
    scale, shift = alignment(source, target)
    fold_into_head(model.head, scale, shift)
    gap_after = domain_gap(source, target * scale + shift, seed)
    after = np.asarray(outputs_of_features(model, target))
    note = {"target_inputs": len(target), "domain_gap": {"before": gap_before, "after": gap_after},
            "feature_scale": {"median": round(float(scale.median()), 3), "max": round(float(scale.max()), 3)}}
    if model.task.name == "classification":
        note["target_predictions_changed"] = round(float((before.argmax(1) != after.argmax(1)).mean()), 3)
        note["target_class_shares"] = {
            "before": _shares(before.argmax(1), model.classes), "after": _shares(after.argmax(1), model.classes)}
    return note


def _shares(predicted: np.ndarray, classes: list[str]) -> dict:
    counts = np.bincount(predicted, minlength=len(classes))
    return {c: round(float(k / max(1, counts.sum())), 3) for c, k in zip(classes, counts)}


def adapt_to_target(ctx, model) -> dict:
    """`--adapt-to` in a fit: the training rows' and the target inputs' features through `model`'s (final) body, then
    the alignment folded into its head."""
    from headstart.train.feature_cache import features_of
    from headstart.train.stages import cached_features

    paths = target_paths(ctx.cfg)
    inputs, skipped = ctx.adapt_inputs  # read by the fit before it trained (target_inputs)
    if not ctx.backbone_changed:  # the frozen body: both through the feature cache
        source = cached_features(ctx, "train")
        target, _, _ = features_of(ctx.cache, ctx.backbone, ctx.modality, inputs, 2 * ctx.cfg.batch_size, ctx.device,
                                   ctx.num_workers, ctx.progress, "target")
    else:
        source, target = (ctx.features_and_outputs(model, xs, f"features ({label}, for --adapt-to)")[0] for xs, label in
                          (([x for x, _ in ctx.data.train], "train"), (inputs, "target")))
    note = adapt_head(model, source.float(), target.float(), ctx.cfg.seed)
    return {"inputs": paths, "skipped": len(skipped), **({"unreadable": skipped} if skipped else {}),
            "source_rows": len(source), **note}
