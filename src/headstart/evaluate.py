"""Metrics (scikit-learn): accuracy, macro precision/recall/F1, per-class table, confusion matrix; MAE, RMSE, R²."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix, mean_absolute_error, mean_squared_error,
                             precision_recall_fscore_support, r2_score)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    y_pred = probs.argmax(1)
    labels = list(range(len(classes)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    # Macro averages over the classes the scored rows hold or the model predicted (scikit-learn's own default): a
    # class neither there nor predicted has no evidence either way, and counted as 0 it sank a 10-class imbalanced
    # fit's macro precision to 0.075 when 4 classes were missing from its 14 test images.
    seen = sorted(set(np.asarray(y_true).tolist()) | set(y_pred.tolist()))
    macro = precision_recall_fscore_support(y_true, y_pred, labels=seen, average="macro", zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "macro_classes": len(seen),
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        ],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": classes,
    }


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float = 0.5) -> dict:
    """Micro/macro F1 at `threshold` (macro over the labels scored or predicted), mean average precision over the
    labels scored, per-label precision/recall/F1."""
    from sklearn.metrics import average_precision_score, f1_score

    y_pred = (probs >= threshold).astype(int)
    y_true = y_true.astype(int)
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    present = y_true.sum(0) > 0
    ap = average_precision_score(y_true[:, present], probs[:, present], average=None) if present.any() else np.array([0.0])
    # Macro F1 over the labels the scored rows hold or the model predicted, as classification_metrics averages: a label
    # neither there nor predicted has no evidence either way (counted as 0 it took a fit's 0.609 to 0.406).
    seen = np.flatnonzero(present | (y_pred.sum(0) > 0))
    macro = f1_score(y_true[:, seen], y_pred[:, seen], average="macro", zero_division=0) if len(seen) else 0.0
    return {
        "n": int(len(y_true)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "f1_macro": float(macro),
        "macro_classes": int(len(seen)),
        "map": float(np.mean(ap)),
        "threshold": threshold,
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        ],
        "classes": classes,
    }


def baseline_comparison(metrics: dict) -> tuple[str, bool]:
    """The fit's score beside its classical baseline's (metrics["baseline"], an untrained body's fit), said once for
    the summary and the report: ("R² 0.8494 against 0.8499; this model did at least as well", baseline ahead?)."""
    base = metrics["baseline"]
    ours = metrics[base["metric"]]
    ahead = round(base["score"], 4) > round(ours, 4)  # as printed: "0.8490 against 0.8490" is no lead
    verdict = "it did better than this model" if ahead else "this model did at least as well"
    return f"{'R²' if base['metric'] == 'r2' else 'accuracy'} {base['score']:.4f} against {ours:.4f}; {verdict}", ahead


def regression_metrics(y_true: np.ndarray, preds: np.ndarray, target: str) -> dict:
    return {
        "n": int(len(y_true)),
        "target": target,
        "r2": float(r2_score(y_true, preds)) if len(y_true) > 1 else float("nan"),
        "mae": float(mean_absolute_error(y_true, preds)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, preds))),
    }


def per_class_table(metrics: dict) -> str:
    width = max(8, *(len(row["class"]) for row in metrics["per_class"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for row in metrics["per_class"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}")
    return "\n".join(lines)


def fitted_rows_note(run: str | Path, data: str | Path, scored: int) -> str | None:
    """When `evaluate` scored the very data a run was fitted on and more rows than the fit held out, say so: the
    score counts rows the model learned from (a 40-image folder scored 0.95 where its 6 test images gave 0.67).
    The fit's data path is read from its config.yaml."""
    import yaml

    run = Path(run)
    config, info = run / "config.yaml", run / "data.json"
    if not config.is_file() or not info.is_file():
        return None
    recorded = yaml.safe_load(config.read_text()) or {}
    if Path(str(data)).resolve() not in _fitted_paths(run, recorded):
        return None
    sizes = json.loads(info.read_text()).get("sizes", {})
    held_out = sizes.get("test") or sizes.get("val") or 0
    learned = scored - held_out
    if learned <= 0:  # a split layout's test (or val) part: the rows the fit itself was scored on
        return None
    part = "test" if sizes.get("test") else "validation"
    return (f"{data} is the data this run was fitted on: {learned} of the {scored} rows scored trained or validated it, "
            f"so these scores are optimistic. The fit's own score on its {held_out} {part} rows is in "
            f"{run / 'metrics.json'}; to judge the model, evaluate data it never saw.")


def _fitted_paths(run: Path, recorded: dict) -> set[Path]:
    """Where a run's data may be: config.yaml keeps `data` and `out` as given, relative to where the fit ran; that
    folder is the run's own less its `out`, so a run evaluated from elsewhere is still matched."""
    data, out = recorded.get("data"), recorded.get("out")
    if not data:
        return set()
    paths = {Path(str(data)).resolve()}
    run_parts, out_parts = run.resolve().parts, Path(str(out)).parts if out else ()
    if out and not Path(str(out)).is_absolute() and run_parts[-len(out_parts):] == out_parts:
        fit_cwd = Path(*run_parts[:-len(out_parts)])
        paths.add((fit_cwd / str(data)).resolve())
    return paths
