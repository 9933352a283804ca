"""report.html: one self-contained page per run (figures inlined), rendered from the run directory alone.

Sections appear when their files exist: config, data summary (class counts, skipped items), metrics and the
per-class table, confusion matrix, learning curves, calibration, the most confident mistakes, the rank table
(rank.json) and transfer vs scratch (compare.json / compare.png).
"""
from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

import numpy as np

from headstart.evaluate import baseline_comparison
from headstart.io_utils import slug, write_text

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}img.fig{max-width:100%;border:1px solid #eee}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem}.ok{background:#e8f5e9;border:1px solid #8c8;padding:.5rem}
.mistakes{display:flex;flex-wrap:wrap;gap:.6rem}.mistake{border:1px solid #ddd;padding:.3rem;width:150px;font-size:.8rem}
.mistake img{width:140px;height:140px;object-fit:contain;background:#fafafa}pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.8rem}
"""


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _figure(run: Path, name: str, alt: str) -> str:
    path = run / name
    return f'<img class="fig" alt="{html.escape(alt)}" src="{png_data_uri(path)}">' if path.is_file() else ""


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{html.escape(_fmt(v))}</td>' for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def read_predictions(run: Path) -> list[dict]:
    path = run / "predictions.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot_calibration(rows: list[dict], path: Path, bins: int = 10) -> float | None:
    """Reliability diagram of the top-class confidence; returns the expected calibration error."""
    if not rows or "confidence" not in rows[0]:
        return None
    from headstart.plots import plt, _save

    conf = np.array([float(r["confidence"]) for r in rows])
    correct = np.array([r["true"] == r["predicted"] for r in rows], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    centers, accs, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centers.append(conf[mask].mean())
            accs.append(correct[mask].mean())
            counts.append(int(mask.sum()))
    ece = float(sum(c * abs(a - m) for c, a, m in zip(counts, accs, centers)) / len(conf))
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
    ax.plot(centers, accs, "o-", label=f"this model (ECE {ece:.3f})")
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return ece


def _mistakes(rows: list[dict], modality, limit: int = 12) -> str:
    wrong = [r for r in rows if "confidence" in r and r["true"] != r["predicted"]]
    wrong.sort(key=lambda r: -float(r["confidence"]))
    if not wrong:
        return "<p>No mistakes on the evaluation split.</p>" if rows else ""
    cards = []
    for r in wrong[:limit]:
        shown = modality.preview_html(r["input"]) if modality is not None else html.escape(r["input"][:200])
        cards.append(f'<div class="mistake">{shown}<br><b>{html.escape(r["predicted"])}</b> ({float(r["confidence"]):.2f})'
                     f'<br>true: {html.escape(r["true"])}</div>')
    return f'<div class="mistakes">{"".join(cards)}</div>'


def _scores_line(metrics: dict, split: str) -> str:
    """The headline scores of one task's metrics ("" for none: a multi-task's are per target)."""
    if "accuracy" in metrics:
        return (f"<p>{split} accuracy <b>{metrics['accuracy']:.4f}</b>, macro F1 {metrics['f1_macro']:.4f}, "
                f"precision {metrics['precision_macro']:.4f}, recall {metrics['recall_macro']:.4f} (n={metrics['n']})</p>")
    if "f1_micro" in metrics:
        return (f"<p>{split} micro F1 <b>{metrics['f1_micro']:.4f}</b>, macro F1 {metrics['f1_macro']:.4f}, "
                f"mAP {metrics['map']:.4f} (n={metrics['n']})</p>")
    if "r2" in metrics:
        return (f"<p>{split} R² <b>{metrics['r2']:.4f}</b>, MAE {metrics['mae']:.4f}, RMSE {metrics['rmse']:.4f} "
                f"(n={metrics['n']})</p>")
    return ""


def _per_class_table(metrics: dict) -> str:
    return _table(["class", "precision", "recall", "F1", "support"],
                  [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in metrics["per_class"]])


def render_report(run: str | Path) -> Path:
    """Write `<run>/report.html` from the files in the run directory; returns its path."""
    run = Path(run)
    metrics = _json(run / "metrics.json")
    data = _json(run / "data.json")
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    modality = _modality(data.get("modality"))
    parts = [f"<h1>headstart run: {html.escape(run.name)}</h1>"]

    split = metrics.get("split", "eval")
    parts.append(_scores_line(metrics, split))
    for target, scores in metrics.get("targets", {}).items():  # multi-task: a line per target
        parts.append(_scores_line(scores, f"{html.escape(target)}: {split}"))
    refit = metrics.get("refit")
    if refit:  # the validation split joined training: say which model the numbers above describe
        scored = ("the model fitted on train + val, on the test split it never saw" if refit.get("fitted_once")
                  else "the model fitted on train only, validated before the refit")
        parts.append(f"<p>Refit on train + val ({refit['rows']} rows): {html.escape(refit['reason'])}. "
                     f"The metrics above are of {html.escape(scored)}.</p>")
    baseline = metrics.get("baseline")
    if baseline:  # an untrained body (a table's mlp): the classical model on the same rows is the number to beat
        said, ahead = baseline_comparison(metrics)
        parts.append(f'<p class="{"warn" if ahead else "ok"}">Classical baseline, {html.escape(baseline["name"])} on the '
                     f'same rows (no pre-trained body to transfer): {html.escape(said)}.</p>')
    if metrics.get("update"):  # `headstart update`: the run it started from and this one, on the old rows and the new
        from headstart.updating import summary

        task = "regression" if "r2" in metrics else "classification"
        parts.append(f"<pre>{html.escape(summary(metrics['update'], task))}</pre>")
    for name, note in metrics.get("stages", {}).items():
        if "memory" in note:  # train/memory.py: the stage started again at a smaller batch
            parts.append(f"<p>Stage {html.escape(name)}: {html.escape(note['memory'])}.</p>")
    compare = _json(run / "compare.json")
    if compare:
        verdict = compare["verdict"]  # a gain within chance on the test split is no clear gain: not shown in green
        cls = "warn" if verdict["negative_transfer"] or verdict.get("no_gain") or verdict.get("within_chance") else "ok"
        parts.append(f'<p class="{cls}">{html.escape(compare["verdict"]["message"])}</p>')

    parts.append("<h2>Data</h2>")
    if data:
        sizes = data.get("sizes", {})
        parts.append(f"<p>{html.escape(str(data.get('modality', '')))} data, layout {html.escape(str(data.get('layout', '')))}, "
                     f"train {sizes.get('train')} / val {sizes.get('val')} / test {sizes.get('test')}</p>")
        counts = data.get("class_counts")
        if counts:
            parts.append(_table(["class", "train", "val", "test"], [[c, counts["train"].get(c, 0), counts["val"].get(c, 0), counts["test"].get(c, 0)]
                                                                    for c in data["classes"]]))
        skipped = data.get("skipped", [])
        parts.append(f"<p>{len(skipped)} unreadable or invalid item(s) skipped.</p>")
        if skipped:
            parts.append(_table(["where", "reason"], [[s["where"], s["reason"]] for s in skipped[:50]], left=2))

    if metrics.get("per_class"):
        parts.append("<h2>Metrics per class</h2>")
        parts.append(_per_class_table(metrics))
        parts.append(_figure(run, "confusion_matrix.png", "confusion matrix"))
    for target, scores in metrics.get("targets", {}).items():
        if scores.get("per_class"):
            parts.append(f"<h2>Metrics per class of {html.escape(target)}</h2>")
            parts.append(_per_class_table(scores))
            parts.append(_figure(run, f"confusion_matrix_{slug(target)}.png", f"confusion matrix of {target}"))

    scatters = sorted(run.glob("predicted_vs_true*.png"))  # regression: one per regressed target
    if scatters:
        parts.append("<h2>Predicted against true</h2>")
        parts += [_figure(run, p.name, "predicted against true") for p in scatters]

    parts.append("<h2>Learning curves</h2>")
    parts.append(_figure(run, "history.png", "learning curves per stage") or "<p>No per-epoch history.</p>")
    stages = metrics.get("stages", {})
    if stages:
        rows = [[name, n.get("best_epoch", ""), n.get("epochs_run", ""), n.get("seconds", ""), n.get("trainable_params", n.get("inputs", ""))]
                for name, n in stages.items()]
        parts.append(_table(["stage", "best epoch", "epochs run", "seconds", "trainable params / inputs"], rows))

    predictions = read_predictions(run)
    if predictions and "confidence" in predictions[0]:
        ece = plot_calibration(predictions, run / "calibration.png")
        parts.append("<h2>Calibration</h2>")
        parts.append(f"<p>Expected calibration error {ece:.4f}: how far the model's confidence is from its accuracy.</p>")
        parts.append(_figure(run, "calibration.png", "calibration plot"))
        parts.append("<h2>Most confident mistakes</h2>")
        parts.append(_mistakes(predictions, modality))

    rank = _json(run / "rank.json")
    if rank:
        cols = [c for c in ("logme", "knn", "probe") if c in rank["ranking"][0]]
        parts.append(f"<h2>Candidate backbones (ranked by {html.escape(rank['score'])})</h2>")
        parts.append(_table(["model", *cols, "seconds"], [[r["model"], *[r[c] for c in cols], r["seconds"]] for r in rank["ranking"]]))
    if compare:
        parts.append("<h2>Transfer vs scratch</h2>")
        parts.append(_figure(run, "compare.png", "transfer vs scratch"))
        rows = []
        for frac, row in compare["fractions"].items():
            for arm in ("transfer", "scratch"):
                a = row[arm]
                rows.append([f"{frac} ({row['train_size']})", arm, a["test"], a.get("start", ""), a.get("slope", ""), a.get("asymptote", "")])
            if "baseline" in row:
                rows.append([f"{frac} ({row['train_size']})", row["baseline"]["name"], row["baseline"]["test"], "", "", ""])
        parts.append(_table(["train fraction (n)", "model", "test", "start", "slope", "asymptote"], rows, left=2))

    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(config)}</pre>")
    page = f'<!doctype html><html><head><meta charset="utf-8"><title>headstart: {html.escape(run.name)}</title><style>{CSS}</style></head><body>{"".join(parts)}</body></html>'
    write_text(run / "report.html", page)
    return run / "report.html"


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _modality(name: str | None):
    if not name:
        return None
    from headstart.data import MODALITIES

    return MODALITIES.get(name) if name in MODALITIES else None
