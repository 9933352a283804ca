"""fit: data -> backbone -> new head -> strategy -> train -> evaluate -> save, into one run directory."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from headstart.backbones import create_backbone
from headstart.config import FitConfig
from headstart.data.images import load_image_data
from headstart.data.sizing import choose_preprocess
from headstart.errors import UserError
from headstart.evaluate import classification_metrics, predict_proba
from headstart.heads import HEADS, build_head
from headstart.io_utils import write_json, write_text
from headstart.model import TransferModel
from headstart.plots import plot_confusion_matrix, plot_history
from headstart.progress import EVAL_COST, RunProgress, format_seconds
from headstart.run import Run, summarize_metrics
from headstart.rundir import default_out, is_launch_primary, prepare_run_dir, write_history_csv
from headstart.strategies import STRATEGIES
from headstart.train.context import FitContext
from headstart.train.engine import resolve_precision
from headstart.train.feature_cache import FeatureCache
from headstart.train.stages import HeadOnFeatures, cached_features


def fit(data: str | Path, model: str = "efficientnet_lite0", strategy: str = "two-stage", **options) -> Run | None:
    """Transfer `model` to the labeled images in `data`; returns the Run (None in extra DDP processes)."""
    unknown = set(options) - FitConfig.field_names()
    if unknown:
        raise UserError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
    cfg = FitConfig(data=str(data), model=model, strategy=strategy, **options)
    return fit_config(cfg)


def fit_config(cfg: FitConfig) -> Run | None:
    started = time.perf_counter()
    recipe = STRATEGIES.get(cfg.strategy)
    HEADS.get(cfg.head)  # unknown names fail before anything is written
    cfg.out = str(cfg.out or default_out(cfg.data))
    primary = is_launch_primary()
    out = prepare_run_dir(cfg.out, cfg.force) if primary else Path(cfg.out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    data = load_image_data(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    backbone = create_backbone(cfg.model, cfg.weights)
    backbone.preprocess, size_reason = choose_preprocess(backbone.preprocess, data.native_size, cfg.image_size)
    head = build_head(cfg.head, backbone.feature_dim, len(data.classes))
    cfg.resolved = {
        "input_size": backbone.preprocess.input_size,
        "input_size_reason": size_reason,
        "preprocess": backbone.preprocess.to_dict(),
        "precision": resolve_precision(cfg),
        "evaluated_on": "test" if data.test else "val",
        "backbone_weights": backbone.weights_id,
    }
    if primary:
        write_text(out / "config.yaml", cfg.to_yaml())
        write_json(out / "data.json", data.summary())

    ctx = FitContext(cfg, data, backbone, head, FeatureCache(cfg.cache_dir), RunProgress(cfg.progress and primary))
    stages = recipe.stages()
    eval_items = data.test or data.val
    if any(isinstance(s, HeadOnFeatures) for s in stages):
        ctx.progress.plan(HeadOnFeatures().extraction_cost(ctx))
    ctx.progress.plan(sum(s.cost(ctx) for s in stages) + len(eval_items) * EVAL_COST)
    for stage in stages:
        stage.run(ctx)
    if not ctx.is_global_zero:
        return None

    model = TransferModel(backbone, head, data.classes, cfg.head).eval()
    probs = _eval_probs(ctx, model, "test" if data.test else "val")
    metrics = classification_metrics(np.array([y for _, y in eval_items]), probs, data.classes)
    metrics.update(split=cfg.resolved["evaluated_on"], stages=ctx.stage_notes, skipped=len(data.skipped),
                   seconds=round(time.perf_counter() - started, 1),
                   feature_cache={"hits": ctx.cache.hits, "computed": ctx.cache.computed})
    _write_outputs(out, model, metrics, ctx)
    print(_summary(cfg, data, metrics, ctx, out), flush=True)
    return Run(out, model)


def _eval_probs(ctx: FitContext, model: TransferModel, split: str) -> np.ndarray:
    """Held-out probabilities; from cached features when the backbone never changed (no backbone pass)."""
    if not ctx.backbone_changed:
        with torch.no_grad():
            logits = ctx.head.cpu().eval()(cached_features(ctx, split))
        return torch.softmax(logits, dim=1).numpy()
    items = getattr(ctx.data, split)
    ctx.progress.open(f"evaluate ({split})", total=len(items), unit="img")
    probs = predict_proba(model, [p for p, _ in items], 2 * ctx.cfg.batch_size, ctx.device, ctx.num_workers,
                          on_batch=lambda n: ctx.progress.advance(n, EVAL_COST * n))
    ctx.progress.close()
    return probs


def _write_outputs(out: Path, model: TransferModel, metrics: dict, ctx: FitContext) -> None:
    model.cpu().save(out / "model")
    write_json(out / "metrics.json", metrics)
    write_history_csv(out / "history.csv", ctx.history)
    plot_history(ctx.history, out / "history.png")
    plot_confusion_matrix(metrics["confusion_matrix"], metrics["classes"], out / "confusion_matrix.png")


def _summary(cfg: FitConfig, data, metrics: dict, ctx: FitContext, out: Path) -> str:
    sizes = data.summary()["sizes"]
    lines = [
        "",
        f"headstart fit: {cfg.data} -> {out}",
        f"  data      {len(data.classes)} classes, train {sizes['train']} / val {sizes['val']} / test {sizes['test']} ({data.layout})"
        + (f", {len(data.skipped)} unreadable file(s) skipped (listed in data.json)" if data.skipped else ""),
        f"  backbone  {cfg.model}, input {cfg.resolved['input_size']} px ({cfg.resolved['input_size_reason']})",
        f"  strategy  {cfg.strategy}: {STRATEGIES.get(cfg.strategy).summary}",
    ]
    for name, note in ctx.stage_notes.items():
        if name == "features":
            lines.append(f"  features  {note['images']} images through the frozen backbone in {format_seconds(note['seconds'])} (cached for next time)")
            continue
        lines.append(f"  {name:<9} best epoch {note['best_epoch']}/{note['epochs_run']}, val loss {note['best_val_loss']:.4f}, "
                     f"{note['trainable_params']:,} trainable params, {format_seconds(note['seconds'])}")
    lines.append(f"  cache     {ctx.cache.hits} feature(s) reused, {ctx.cache.computed} computed")
    lines.append(f"  {metrics['split']:<9} " + summarize_metrics(metrics).replace("\n", "\n            "))
    lines.append(f"  total     {format_seconds(metrics['seconds'])}; files: config.yaml model/ metrics.json history.csv history.png confusion_matrix.png")
    return "\n".join(lines)
