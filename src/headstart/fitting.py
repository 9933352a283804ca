"""fit: data -> backbone -> new head -> strategy -> train -> evaluate -> save, into one run directory."""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from headstart.adaptation import adapt_to_target, target_inputs, target_paths
from headstart.backbones import create_backbone
from headstart.backbones.run_source import source_head_state
from headstart.config import FitConfig
from headstart.data import MODALITIES, resolve_modality
from headstart.data.base import as_multilabel, check_classes, looks_multilabel, warn_of_unread_options
from headstart.drift import build_reference, save_reference
from headstart.errors import UserError, warn
from headstart.evaluate import baseline_comparison
from headstart.heads import HEADS, build_head
from headstart.inference import features_and_outputs, outputs_of_features
from headstart.io_utils import write_json, write_text
from headstart.model import TransferModel
from headstart.plots import plot_history, plot_scored
from headstart.predict import write_predictions
from headstart.report import render_report
from headstart.progress import EVAL_COST, RunProgress, format_seconds
from headstart.run import Run
from headstart.rundir import default_out, environment, is_launch_primary, prepare_run_dir, remove_if_unused, write_history_csv
from headstart.strategies import STRATEGIES
from headstart.tasks import task_of
from headstart.train.context import FitContext
from headstart.train.engine import collecting_only_new_objects, release_memory, resolve_precision
from headstart.train.feature_cache import FeatureCache
from headstart.train.stage import note_score
from headstart.train.stages import HeadOnFeatures, cached_features, run_stage


def fit(data: str | Path, model: str = "auto", strategy: str = "auto", **options) -> Run | None:
    """Transfer `model` to the labeled data in `data`; returns the Run (None in extra DDP processes)."""
    FitConfig.check_options(options)
    cfg = FitConfig(data=str(data), model=model, strategy=strategy, **options)
    return fit_config(cfg)


def fit_config(cfg: FitConfig, *, data=None, backbone=None, callbacks=(), replayed=None,
               checkpoints: bool = True) -> Run | None:
    """Run a fit. `data` (a LabeledData) and `backbone` replace loading them (`compare`: subsets, scratch);
    `callbacks` join every training stage's Lightning callbacks (`tune`: pruning); `replayed` (features, labels)
    join the head stage's training rows (`update` without the old data); `checkpoints`: long stages save epochs
    under OUT/checkpoints for --resume (tune's trials do not: a study resumes by trials)."""
    with collecting_only_new_objects():
        return _fit(cfg, data, backbone, callbacks, replayed, checkpoints)


def _fit(cfg: FitConfig, data, backbone, callbacks, replayed=None, checkpoints: bool = True) -> Run | None:
    started = time.perf_counter()
    backbone_given = backbone is not None  # a given body (compare's scratch arm) cannot be rebuilt for a refit
    recipe = STRATEGIES.get(cfg.strategy)
    HEADS.get(cfg.head)  # unknown names fail before anything is written
    if cfg.resume and not cfg.out:  # else a fresh run would start in a new timestamped folder, resuming nothing
        raise UserError("--resume continues a stopped fit in its folder: give its --out")
    cfg.out = str(cfg.out or default_out(cfg.data))
    primary = is_launch_primary()
    out = prepare_run_dir(cfg.out, cfg.force, keep=[cfg.data, cfg.model, cfg.adapt_to], resume=cfg.resume) \
        if primary else Path(cfg.out)
    if cfg.resume and (out / "config.yaml").exists():
        check_same_options(cfg, FitConfig.from_yaml(out / "config.yaml"), out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    try:
        ctx = build_context(cfg, data, backbone, progress=cfg.progress and primary)
        if cfg.adapt_to:  # read now: a folder with nothing readable fails before the fit trains, not after
            ctx.adapt_inputs = target_inputs(ctx.modality, target_paths(cfg), _model_of(ctx))
    except Exception:
        if primary:
            remove_if_unused(out)
        raise
    data, modality, task, backbone = ctx.data, ctx.modality, ctx.task, ctx.backbone
    ctx.extra_callbacks = list(callbacks)
    ctx.replayed = replayed
    ctx.checkpoints = out / "checkpoints" if checkpoints else None
    requested = dataclasses.replace(cfg, resolved={})  # config.yaml keeps what was asked (--lr auto), beside what it became
    if primary:
        write_text(out / "config.yaml", cfg.to_yaml())
        write_json(out / "data.json", data.summary())

    stages = recipe.stages()
    eval_items = data.test or data.val
    if (backbone.pretrained or backbone.starts_linear) and any(isinstance(s, HeadOnFeatures) for s in stages):
        ctx.progress.plan(HeadOnFeatures().extraction_cost(ctx))
    ctx.progress.plan(sum(s.cost(ctx) for s in stages) + len(eval_items) * EVAL_COST)
    stages = [t for s in stages for t in s.expand(ctx)]  # auto measures and picks here, on train and val
    why_refit = None if backbone_given else refit_reason(cfg, ctx, stages)
    fit_once = bool(why_refit and data.test)  # the test split scores the model: no train-only fit is needed first
    if data.test and not fit_once:
        ctx.progress.plan(len(data.val) * EVAL_COST)  # the validation rows join monitor's reference (_reference)
    if fit_once:
        for stage in stages:
            stage.decide_on_validation(ctx)  # e.g. the augmentation check, while the split exists
        ctx.data = _val_joins_train(data)
        ctx.model_notes["refit"] = "train + val"
    for stage in stages:
        run_stage(stage, ctx)
    if not ctx.is_global_zero:
        return None
    requested.resolved = cfg.resolved  # again, with what the stages resolved (--lr auto, augmentation)
    write_text(out / "config.yaml", requested.to_yaml())

    model = _model_of(ctx)
    split = "test" if data.test else "val"
    features, preds = _eval_features(ctx, model, split)
    adaptation = None
    if cfg.adapt_to:  # the saved model is the adapted one: its held-out scores, reference and predictions say so
        adaptation = {"before": _scores(task.metrics([y for _, y in eval_items], preds, data.classes)),
                      **adapt_to_target(ctx, model)}
        preds = outputs_of_features(model, features)
    reference = _reference(ctx, model, split, features, preds)
    metrics = task.metrics([y for _, y in eval_items], preds, data.classes)
    if fit_once:
        metrics["refit"] = {"reason": why_refit, "rows": len(ctx.data.train), "fitted_once": True,
                            "metrics_are": "of the model fitted on train + val, scored on the test split it never saw"}
    elif why_refit and not any(note.get("world_size", 1) > 1 for note in ctx.stage_notes.values()):
        # no test split: the train-only fit gave the honest validation metrics; now the saved model (one process only)
        refit_ctx = _refit(cfg, ctx)
        model = _model_of(refit_ctx)
        metrics["refit"] = {"reason": why_refit, "rows": len(refit_ctx.data.train), "stages": refit_ctx.stage_notes,
                            "metrics_are": "of the model fitted on train only, validated before the refit (an honest estimate)"}
        ctx.history += [row | {"stage": f"refit {row['stage']}"} for row in refit_ctx.history]
        backbone.end_run()
        backbone = refit_ctx.backbone
        if cfg.adapt_to:  # the refit model is the one saved: align it in its turn (the metrics stay the validated one's)
            adaptation = {**adaptation, **adapt_to_target(refit_ctx, model), "refit": "aligned again after the refit"}
        # the saved model learned from the validation rows too: its reference is its own view of them
        reference = build_reference(*features_and_outputs(model, [x for x, _ in eval_items], 2 * cfg.batch_size,
                                                          ctx.device, ctx.num_workers), "val (refit on it)", cfg.seed,
                                    _replayable_labels(data.task, eval_items))
    if not backbone.pretrained and not backbone_given:
        # nothing was transferred (a table's mlp starts untrained): say how the classical model does on the same rows
        baseline = modality.classical_baseline(ctx.data.train, eval_items, data.task)
        if baseline:
            metrics["baseline"] = {"name": baseline[0], "score": baseline[1], "metric": "r2" if data.task == "regression" else "accuracy"}
    if adaptation:
        metrics["adaptation"] = adaptation
    metrics.update(split=cfg.resolved["evaluated_on"], stages=ctx.stage_notes, skipped=len(data.skipped),
                   seconds=round(time.perf_counter() - started, 1),
                   feature_cache={"hits": ctx.cache.hits, "computed": ctx.cache.computed})
    figures = _write_outputs(out, model, metrics, ctx, [y for _, y in eval_items], preds)
    if ctx.replayed is not None:  # update without the old data: a later one replays these rows again
        reference = _with_replayed(reference, model, ctx.replayed, cfg.seed)
    save_reference(out / "model", reference)
    write_predictions(out / "predictions.csv", [modality.describe_input(x) for x, _ in eval_items],
                      [y for _, y in eval_items], preds, data.classes, task)
    render_report(out)
    if primary and ctx.checkpoints is not None:
        shutil.rmtree(ctx.checkpoints, ignore_errors=True)  # the run is whole: nothing to resume
    print(_summary(cfg, data, metrics, ctx, out, figures), flush=True)
    backbone.end_run()
    release_memory()
    return Run(out, model)


def build_context(cfg: FitConfig, data=None, backbone=None, progress: bool = True) -> FitContext:
    """data -> task -> backbone (adapted to the data) -> new head, and the training defaults they imply."""
    modality = resolve_modality(cfg) if data is None else MODALITIES.get(data.modality)
    if data is None:  # the fit's own data (not a refit's or compare's rows again): said once
        warn_of_unread_options(cfg, modality)
    data = data or check_classes(modality.load(cfg), cfg.data)
    if data.task == "classification" and (cfg.task == "multilabel" or cfg.task == "auto" and looks_multilabel(data.classes, cfg.label_separator)):
        data = as_multilabel(data, cfg.label_separator)
    cfg.check_task(data.task)  # --task auto: the options that depend on it are checked now it is known
    task = task_of(data)
    balance = task.balance((y for _, y in data.train), len(data.classes)) if cfg.balance == "weights" else None
    if data.task in ("regression", "multitask"):  # numbers are learned standardised
        task.fit_scale(y for _, y in data.train)
    backbone = backbone or create_backbone(cfg.model if cfg.model != "auto" else modality.default_backbone, cfg.weights)
    if backbone.modality != modality.name:
        raise UserError(f"--model {cfg.model} reads {backbone.modality} data, but {cfg.data} is {modality.name} data; "
                        f"use a {modality.name} backbone (e.g. {modality.default_backbone}) or pass --modality")
    _check_freeze_until(cfg, backbone)
    filled = cfg.apply_training_defaults(backbone.default_hparams)
    cfg.resolved = {
        "modality": modality.name,
        "task": task.name,
        **({"class_weights": balance} if balance else {}),
        "model": backbone.name,
        **({"body_from": backbone.source_run} if getattr(backbone, "source_run", None) else {}),  # run:DIR's folder
        **backbone.adapt(data, cfg),
        "preprocess": backbone.preprocess.to_dict(),
        "precision": resolve_precision(cfg, backbone),
        "evaluated_on": "test" if data.test else "val",
        "backbone_weights": backbone.weights_id,
        "training_defaults": {"from": f"{backbone.name} defaults over headstart's", **filled},
        "environment": environment(cfg.uses_gpu()),
    }
    head = build_head(cfg.head, backbone.feature_dim, task.n_outputs(data.classes))
    source_head = source_head_state(backbone, cfg.head, task, data.classes)
    if source_head is not None:  # run:DIR on the same task: its head starts, and competes with the new solve
        head.load_state_dict(source_head)
        cfg.resolved["head_from"] = f"run:{backbone.source_run} (same classes): kept unless the head stage beats it"
    ctx = FitContext(cfg, data, modality, task, backbone, head, FeatureCache(cfg.cache_dir), RunProgress(progress))
    ctx.head_trained = ctx.head_from_source = source_head is not None
    if cfg.resolved.get("body_from"):  # model.json says whose body this is, beyond its architecture
        ctx.model_notes["body_from"] = f"run:{cfg.resolved['body_from']}"
    return ctx


def _check_freeze_until(cfg: FitConfig, backbone) -> None:
    """--freeze-until at or past the last layer group freezes the whole body: a head-only fit the user did not ask
    for by name (and would be told of only by a flat fine-tuning curve)."""
    groups = len(backbone.layer_groups())
    if cfg.freeze_until and cfg.freeze_until >= groups:
        raise UserError(f"--freeze-until {cfg.freeze_until} freezes every layer group of {backbone.name} (it has {groups}: "
                        f"0-{groups - 1}); give at most {groups - 1} to fine-tune its top group, or "
                        "--strategy linear-probe to train the head alone")


def _model_of(ctx: FitContext) -> TransferModel:
    cfg = ctx.cfg
    notes = {"strategy": cfg.strategy, **ctx.model_notes}
    model = TransferModel(ctx.backbone, ctx.head, ctx.data.classes, cfg.head, ctx.task, notes).eval()
    model.data_options = {"text_column": cfg.text_column, "label_column": cfg.label_column, "label_separator": cfg.label_separator}
    return model


def refit_reason(cfg: FitConfig, ctx: FitContext, stages: list) -> str | None:
    """Why the saved model should be refit on train + val, or None.

    Only when no stage chose anything on the validation split (a solved linear head, setfit's one pass over
    pairs): then validation only measured the model, and the refit learns the same way from every label. `auto`
    does it when labels are few (the smallest class under auto's FEW training examples; without classes, fewer
    than FEW_VALIDATION_ROWS validation rows), where holding out 15 % costs most; `always` whenever it is possible.
    Asked before any stage trains: with a test split the fit then trains once, on train + val (the test split scores
    it); without one, a train-only fit reports validation and a second fit on train + val is saved (never after
    several processes, DDP).
    """
    from headstart.strategies.auto import FEW, FEW_VALIDATION_ROWS

    if cfg.refit == "never":
        return None
    chooser = next((s.name for s in stages if s.uses_validation(ctx)), None)
    if not ctx.data.val or chooser:
        if cfg.refit == "always":  # asked for and not done: say why, not nothing
            warn("--refit always: the model is not refit on train + val, " + (
                "as there is no validation split" if not ctx.data.val else
                f"as its {chooser} stage chooses its epoch or weights on the validation rows; a strategy that chooses "
                "nothing there (linear-probe, setfit) can be refit"))
        return None
    if cfg.refit == "auto":
        if ctx.data.task != "classification":  # no classes to count: few rows held out for validation
            if len(ctx.data.val) >= FEW_VALIDATION_ROWS:
                return None
            return (f"{len(ctx.data.val)} validation rows (< {FEW_VALIDATION_ROWS}) and no stage chooses anything on "
                    "them: the saved model learns from train + val")
        labels = [y for _, y in ctx.data.train] + (list(ctx.replayed[1]) if ctx.replayed is not None else [])
        smallest = min(np.bincount(labels, minlength=len(ctx.data.classes)))
        if smallest >= FEW:
            return None
        return (f"{smallest} training examples in the smallest class (< {FEW}) and no stage chooses anything on the "
                f"{len(ctx.data.val)} validation rows: the saved model learns from train + val")
    return f"--refit always: no stage chooses anything on the {len(ctx.data.val)} validation rows"


def _val_joins_train(data):
    """The same LabeledData with its validation rows moved into training (what a refit learns from)."""
    return dataclasses.replace(data, train=data.train + data.val, val=[])


# What a resumed fit may change: where and how it runs, not what it learns.
RESUME_FREE_OPTIONS = {"out", "force", "resume", "progress", "num_workers", "cache_dir", "accelerator", "devices",
                       "num_nodes", "resolved"}


def check_same_options(cfg: FitConfig, saved: FitConfig, out: Path) -> None:
    """--resume continues the interrupted fit (or pretrain: `cfg` a PretrainConfig) only with the options it started
    with: each option given now must be what the stopped one had (an option left out, or auto, resolves as it did)."""
    kind, other = ("pretrain", "fit") if cfg.strategy == "pretrain" else ("fit", "pretrain")
    if (saved.strategy == "pretrain") != (kind == "pretrain"):
        raise UserError(f"{out} holds a stopped {other}, not a {kind}: `headstart {other} ... --resume` goes on with it; "
                        f"give this {kind} the --out it stopped in")
    differ = [f"{name} {getattr(cfg, name)!r} (the stopped {kind}'s: {getattr(saved, name)!r})"
              for name in sorted(type(cfg).field_names() - RESUME_FREE_OPTIONS)
              if getattr(cfg, name) not in (None, "auto") and getattr(cfg, name) != getattr(saved, name)]
    if differ:
        raise UserError(f"--resume continues {out} with its own options, and these differ: {'; '.join(differ)}; "
                        f"give the same ones, or --force to {'pre-train' if kind == 'pretrain' else 'fit'} afresh")


def _refit(cfg: FitConfig, ctx: FitContext) -> FitContext:
    """The same stages again, from the pre-trained body, on train + val (what auto picked, not the pick again)."""
    resolved = cfg.resolved
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the new head starts from the validated fit's draw
    refit_ctx = build_context(cfg, data=_val_joins_train(ctx.data), progress=False)
    cfg.resolved = resolved  # config.yaml describes the validated fit; the refit repeats it
    refit_ctx.progress, refit_ctx.extra_callbacks, refit_ctx.replayed = ctx.progress, ctx.extra_callbacks, ctx.replayed
    refit_ctx.adapt_inputs = ctx.adapt_inputs
    refit_ctx.checkpoints = ctx.checkpoints and ctx.checkpoints / "refit"
    picked = ctx.model_notes.get("picked")
    stages = STRATEGIES.get(picked or cfg.strategy).stages()
    refit_ctx.model_notes = {**ctx.model_notes, "refit": "train + val"}
    ctx.progress.plan(sum(s.cost(refit_ctx) for s in stages))
    for stage in stages:
        run_stage(stage, refit_ctx)
    return refit_ctx


def _eval_features(ctx: FitContext, model: TransferModel, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """Held-out features and predictions; from cached features when the backbone never changed (no backbone pass)."""
    if not ctx.backbone_changed:
        features = cached_features(ctx, split)
        return features, outputs_of_features(model, features)
    return ctx.features_and_outputs(model, [x for x, _ in getattr(ctx.data, split)], f"evaluate ({split})")


def _reference(ctx: FitContext, model: TransferModel, split: str, features: torch.Tensor, preds: np.ndarray) -> dict:
    """For `monitor`: what held-out inputs look like to the saved model. The test rows, and the validation rows too
    where training never saw them (one more inference pass, from the cache for a frozen body): a denser reference
    sharpens the per-input novelty threshold."""
    rows = list(getattr(ctx.data, split))
    if split == "test" and ctx.data.val:
        val_features, val_preds = _eval_features(ctx, model, "val")
        features, preds, split = torch.cat([features, val_features]), np.concatenate([preds, val_preds]), "test + val"
        rows += ctx.data.val
    return build_reference(features, preds, split, ctx.cfg.seed, _replayable_labels(ctx.data.task, rows))


def _with_replayed(reference: dict, model: TransferModel, replayed: tuple, seed: int) -> dict:
    """The reference plus the replayed rows (features and labels), their outputs the saved model's."""
    features, labels = replayed
    outputs = np.asarray(outputs_of_features(model, features)).reshape(len(features), -1)
    return build_reference(torch.cat([reference["features"], features.to(torch.float16)]),
                           np.concatenate([reference["outputs"].numpy(), outputs]), f"{reference['split']} + replayed",
                           seed, torch.cat([reference["labels"], torch.as_tensor(labels, dtype=reference["labels"].dtype)]))


def _scores(metrics: dict) -> dict:
    """The headline numbers of a metrics dict (accuracy, F1, R², ...), without the per-class detail."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _replayable_labels(task: str, rows: list) -> list | None:
    """The reference rows' labels where `update` can replay them (classification, regression)."""
    return [y for _, y in rows] if task in ("classification", "regression") else None


def _write_outputs(out: Path, model: TransferModel, metrics: dict, ctx: FitContext, y_true: list, preds) -> list[str]:
    """The model, metrics, history and the scored rows' figures; the figures' file names."""
    model.cpu().save(out / "model")
    write_json(out / "metrics.json", metrics)
    write_history_csv(out / "history.csv", ctx.history)
    plot_history(ctx.history, out / "history.png")
    return plot_scored(out, ctx.task, y_true, preds, metrics)


def _summary(cfg: FitConfig, data, metrics: dict, ctx: FitContext, out: Path, figures: list[str]) -> str:
    sizes = data.summary()["sizes"]
    what = {"classification": f"{len(data.classes)} classes", "multilabel": f"{len(data.classes)} labels (multi-label)",
            "multitask": "multi-task: " + ", ".join(f"{t['name']} ({len(t['classes'])} classes)" if t["classes"] else
                                                     f"{t['name']} (regression)" for t in data.info.get("targets", []))
            }.get(data.task, f"regression on {', '.join(data.classes)}")
    lines = [
        "",
        f"headstart fit: {cfg.data} -> {out}",
        f"  data      {data.modality}, {what}, train {sizes['train']} / val {sizes['val']} / test {sizes['test']} ({data.layout})"
        + (f", {len(data.skipped)} item(s) skipped (unreadable or invalid; listed in data.json)" if data.skipped else ""),
        f"  backbone  {cfg.resolved['model']}" + (f", the body of run:{cfg.resolved['body_from']}" if cfg.resolved.get("body_from") else "")
        + (f", input {cfg.resolved['input']}" if "input" in cfg.resolved else ""),
        f"  strategy  {cfg.strategy}: {STRATEGIES.get(cfg.strategy).summary}",
    ]
    body = "the frozen backbone"
    for name, note in ctx.stage_notes.items():
        memory = f"; {note['memory']}" if "memory" in note else ""  # train/memory.py: a halved batch, accumulated
        if name == "features":
            lines.append(f"  features  {note['inputs']} {ctx.modality.input_noun}{'s' if note['inputs'] != 1 else ''} through {body} in "
                         f"{format_seconds(note['seconds'])} (cached for next time)")
        elif "skipped" in note:
            lines.append(f"  {name:<9} skipped: {note['skipped']}")
        elif "best_epoch" not in note:  # a decision, not a training stage (e.g. what --strategy auto picked)
            lines.append(f"  {name:<9} " + str(note.get("summary") or ", ".join(f"{k} {v}" for k, v in note.items())) + memory)
        else:
            score = note_score(note)
            score = f"val {score[0]} {score[1]:.4f}, " if score else ""
            loss = "no validation rows" if note["best_val_loss"] is None else f"val loss {note['best_val_loss']:.4f}"
            lines.append(f"  {name:<9} best epoch {note['best_epoch']}/{note['epochs_run']}, {score}{loss}, "
                         f"{note['trainable_params']:,} trainable params, {format_seconds(note['seconds'])}{memory}")
        if name == "pairs":  # setfit trained the body on pairs first: the head's features are that body's
            body = "the pair-trained backbone, frozen for the head,"
    lines.append(f"  cache     {ctx.cache.hits} feature(s) reused, {ctx.cache.computed} computed")
    if "refit" in metrics:
        scored = "it, on test" if metrics["refit"].get("fitted_once") else "the model before the refit, on val"
        lines.append(f"  refit     {metrics['refit']['reason']}; the metrics below are of {scored}")
    lines.append(f"  {metrics['split']:<9} " + ctx.task.summarize(metrics).replace("\n", "\n            "))
    if "adaptation" in metrics:
        lines.append("  adapted   " + _adaptation_line(metrics["adaptation"], metrics["split"], ctx.task))
    if "baseline" in metrics:
        lines.append(f"  baseline  {metrics['baseline']['name']}, same rows, no pre-trained body to transfer: "
                     f"{metrics['split']} {baseline_comparison(metrics)[0]}")
    files = " ".join(["report.html config.yaml model/ metrics.json predictions.csv history.csv history.png", *figures])
    lines.append(f"  total     {format_seconds(metrics['seconds'])}; files: {files}")
    return "\n".join(lines)


def _adaptation_line(note: dict, split: str, task) -> str:
    gap = note["domain_gap"]
    line = (f"to {note['target_inputs']} unlabeled inputs ({', '.join(note['inputs'])}): domain gap (proxy A-distance, "
            f"0-2) {gap['before']} -> {gap['after']}")
    if "target_predictions_changed" in note:
        line += f", {note['target_predictions_changed']:.0%} of their predictions changed"
    before = next(iter(note["before"].items()), None)
    if before:
        line += f"; {split} {before[0]} before aligning {before[1]:.4f} (the scores above are the aligned model's)"
    return line + ("\n            it assumes the target holds the classes in about the training proportions: where it "
                   "holds a few of them, fit without --adapt-to")
