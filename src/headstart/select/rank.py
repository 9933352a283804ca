"""rank: score candidate backbones on the user's labeled data before any training (one feature pass each)."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from headstart.backbones import create_backbone
from headstart.config import FitConfig
from headstart.data import resolve_modality
from headstart.data.base import check_classes, one_target
from headstart.errors import UserError
from headstart.io_utils import write_json, write_text
from headstart.progress import RunProgress
from headstart.rundir import default_out, prepare_run_dir
from headstart.select.scores import SCORES, knn_accuracy, knn_r2, logme, probe_accuracy, probe_r2
from headstart.train.feature_cache import FeatureCache, features_of


def rank(data: str | Path, models: list[str] | str, score: str = "logme", out: str | Path | None = None, force: bool = False,
         fit_best: bool = False, **options) -> list[dict]:
    """Transferability of each candidate body on `data` (train + val examples; test stays unseen), best first.

    Scores: LogME, leave-one-out kNN accuracy and cross-validated linear-probe accuracy (classification); for
    regression (--task regression, or a table's numeric target) LogME's regression form, kNN R² and ridge-probe R².
    Multi-label data is refused. With `fit_best`, the winner goes on to a normal `fit` (same options).
    """
    models = list(dict.fromkeys(m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()))
    if not models:
        raise UserError("rank needs at least one model (--models a,b,c)")
    if options.get("weights") and len(models) > 1:  # one file cannot be the weights of several bodies
        raise UserError(f"--weights names one body's weights, and rank was given {len(models)} models; rank them "
                        "without it, or fit each body with its weights and rank run:DIR bodies")
    if score not in SCORES:
        raise UserError(f"--score must be one of {', '.join(SCORES)}, not {score!r}")
    FitConfig.check_options(options, "rank")
    cfg = FitConfig(data=str(data), model=models[0], **options)
    cfg.apply_training_defaults({})
    out_dir = prepare_run_dir(out or default_out(f"rank-{Path(str(data)).stem}"), force, keep=[data, models])
    modality = resolve_modality(cfg)
    labeled = one_target(check_classes(modality.load(cfg), data), "rank")  # the loader reads --task regression's numbers as targets
    if "multilabel" in (labeled.task, labeled.task_chosen):
        raise UserError(f"{data}: rank scores classification and regression data, and this reads as multi-label (labels "
                        f"joined by {cfg.label_separator!r}); pass --task classification to rank with each set of labels "
                        "as one class, or fit each body (--model NAME) and compare their F1")
    _check_candidates(models, modality.name, data)
    regression = labeled.task == "regression"
    items = labeled.train + labeled.val
    inputs, targets = [x for x, _ in items], np.array([y for _, y in items])
    cache, progress = FeatureCache(cfg.cache_dir), RunProgress(cfg.progress)
    device = torch.device("cuda" if cfg.uses_gpu() else "cpu")
    rows = []
    for name in models:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)  # an untrained body (a table's mlp) draws its layers: the same draw on every rank
        body = create_backbone(name, cfg.weights)
        if body.modality != modality.name:
            raise UserError(f"{name} reads {body.modality} data, but {data} is {modality.name} data")
        body.adapt(labeled, cfg)
        feats, computed, extract_s = features_of(cache, body, modality, inputs, 64, device, 0, progress, name)
        f = feats.double().numpy()
        row = {"model": name, "feature_dim": int(f.shape[1]), "input": body.preprocess.describe(),
               "logme": logme(f, targets, regression=regression)}
        row["knn"] = knn_r2(f, targets) if regression else knn_accuracy(f, targets)
        row["probe"] = probe_r2(f, targets, seed=cfg.seed) if regression else probe_accuracy(f, targets, seed=cfg.seed)
        row.update(features_computed=computed, feature_seconds=round(extract_s, 2), seconds=round(time.perf_counter() - start, 2))
        rows.append(row)
    rows.sort(key=lambda r: -r[score])
    result = {"data": str(data), "score": score, "scores": SCORES,
              "n_examples": len(items), "modality": modality.name, "task": labeled.task, "ranking": rows,
              **_caution(targets, regression)}
    write_text(out_dir / "config.yaml", cfg.to_yaml())
    write_json(out_dir / "rank.json", result)
    write_text(out_dir / "rank.csv", _csv(rows))
    print(format_table(result) + f"\nsaved to {out_dir}/rank.json and rank.csv", flush=True)
    if fit_best:
        from headstart.fitting import fit

        from headstart.report import render_report

        fit(data, model=rows[0]["model"], out=str(out_dir / "fit"), **options)
        write_json(out_dir / "fit" / "rank.json", result)
        render_report(out_dir / "fit")
    return rows


FEW_TO_RANK = 5  # examples per class (rows, for regression: 4 x as many) below which the scores are mostly noise


def _caution(targets: np.ndarray, regression: bool) -> dict:
    """{"caution": why the scores cannot separate the bodies} on too few examples, else {}."""
    if regression:
        few = len(targets) < 4 * FEW_TO_RANK
        what = f"{len(targets)} examples"
    else:
        smallest = int(np.unique(targets, return_counts=True)[1].min())
        few = smallest < FEW_TO_RANK
        what = f"{smallest} example(s) in the smallest class"
    if not few:
        return {}
    return {"caution": f"{what}: too few for the kNN vote and the probe's cross-validation to tell the bodies "
                       "apart (their scores are mostly noise); label more before choosing"}


def _check_candidates(models: list[str], modality: str, data) -> None:
    """Every name known and of the data's modality before the first feature pass (a typo in the last name failed
    after the passes of the others); run:, hf: and timm: bodies are checked as they are built."""
    from headstart.backbones import backbone_modality, check_name

    for name in models:
        check_name(name)  # the "unknown backbone ... choose one of" error
        reads = backbone_modality(name)
        if reads is None and name.startswith("run:"):
            create_backbone(name)  # no run there: its one-line error
        if reads is not None and reads != modality:
            raise UserError(f"{name} reads {reads} data, but {data} is {modality} data")


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def format_table(result: dict) -> str:
    rows, score = result["ranking"], result["score"]
    cols = [c for c in ("logme", "knn", "probe") if c in rows[0]]
    width = max(10, *(len(r["model"]) for r in rows))
    task = "regression: knn and probe are R²" if result["task"] == "regression" else result["task"]
    lines = [f"ranked by {score} on {result['n_examples']} labeled {result['modality']} examples ({task})",
             f"{'#':>2}  {'model':<{width}}  " + "  ".join(f"{c:>7}" for c in cols) + "  features  seconds"]
    for i, r in enumerate(rows, 1):
        lines.append(f"{i:>2}  {r['model']:<{width}}  " + "  ".join(f"{r[c]:7.4f}" for c in cols)
                     + f"  {r['feature_dim']:>8}  {r['seconds']:7.1f}")
    if result.get("caution"):
        lines.append(f"caution: {result['caution']}")
    return "\n".join(lines)
