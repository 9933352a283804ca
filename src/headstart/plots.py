"""Plots for the run directory (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from headstart.io_utils import atomic_write  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_confusion_matrix(cm: list[list[int]], classes: list[str], path: str | Path, title: str = "Confusion matrix") -> None:
    n = len(classes)
    size = min(14, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in cm) or 1
    if n <= 30:
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black", fontsize=8)
    _save(fig, Path(path))


def plot_predicted_vs_true(y_true, predicted, path: str | Path, title: str) -> None:
    """A regression's scored rows: predicted against true, with the diagonal a perfect model would lie on."""
    import numpy as np

    y, p = np.asarray(y_true, dtype=float), np.asarray(predicted, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.scatter(y, p, s=12, alpha=0.6)
    low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([low, high], [low, high], color="gray", ls="--", lw=1, label="predicted = true")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, Path(path))


def plot_scored(folder: str | Path, task, y_true: list, preds, metrics: dict, about: str = "") -> list[str]:
    """The figures of scored rows, written to `folder`; their file names. A confusion matrix per classified target
    and predicted against true per regressed one (a multi-task's per target, named after it)."""
    from headstart.io_utils import slug

    folder, made = Path(folder), []
    parts = getattr(task, "parts", None)
    targets = [(p["name"], p["task"].name, [y[j] for y in y_true], preds[:, p["block"]], metrics["targets"][p["name"]])
               for j, p in enumerate(parts)] if parts else [(None, task.name, y_true, preds, metrics)]
    for name, kind, ys, out, scores in targets:
        tail = f"_{slug(name)}" if name else ""
        of = f" of {name}" if name else ""
        if "confusion_matrix" in scores:
            made.append(f"confusion_matrix{tail}.png")
            plot_confusion_matrix(scores["confusion_matrix"], scores["classes"], folder / made[-1],
                                  f"Confusion matrix{of}{about}")
        elif kind == "regression":
            made.append(f"predicted_vs_true{tail}.png")
            plot_predicted_vs_true(ys, out.reshape(len(ys), -1)[:, 0], folder / made[-1],
                                   f"{scores.get('target', name)}: R² {scores['r2']:.3f}{about}")
    return made


def plot_history(rows: list[dict], path: str | Path) -> None:
    """Loss and score (accuracy, or MAE for regression) per epoch, one colour per stage, epochs across the run."""
    if not rows:
        return
    score = next((k for k in ("acc", "f1", "mae") if any(f"val_{k}" in r for r in rows)), "acc")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    offset = 0
    for stage in stages:
        part = [r for r in rows if r["stage"] == stage]
        x = [offset + r["epoch"] for r in part]
        for ax, key in ((ax_loss, "loss"), (ax_acc, score)):
            for split, style in (("train", "--"), ("val", "-")):
                y = [r.get(f"{split}_{key}") for r in part]
                if all(v is not None for v in y):
                    ax.plot(x, y, style, marker=".", label=f"{stage} {split}")
        offset = x[-1]
    for ax, name in ((ax_loss, "loss"), (ax_acc, {"acc": "accuracy", "f1": "micro F1", "mae": "mean absolute error"}[score])):
        ax.set_xlabel("epoch (whole run)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a refit's solved head may have no score on either split
            ax.legend(fontsize=8)
    _save(fig, Path(path))


def plot_compare(results: dict, path: str | Path) -> None:
    """Transfer vs scratch: validation curves over epochs (full data) and test score over training fractions."""
    fig, (ax_epochs, ax_frac) = plt.subplots(1, 2, figsize=(11, 4))
    fractions = list(results["fractions"])
    full = results["fractions"][fractions[-1]]
    ylabel = "validation " + {"r2": "MAE (lower is better)", "f1_micro": "micro F1"}.get(results["score"], "accuracy")
    for arm, style in (("transfer", "-"), ("scratch", "--")):
        curve = full[arm].get("curve", [])
        ax_epochs.plot(range(1, len(curve) + 1), curve, style, marker=".", label=arm)
        ax_frac.plot([float(f) for f in fractions], [results["fractions"][f][arm]["test"] for f in fractions], style, marker="o", label=arm)
    if "baseline" in full:
        ax_frac.plot([float(f) for f in fractions], [results["fractions"][f].get("baseline", {}).get("test") for f in fractions],
                     ":", marker="s", label=full["baseline"]["name"])
        ax_epochs.axhline(full["baseline"]["test"], color="gray", ls=":", label=f"{full['baseline']['name']} (test)")
    extra = len(full["transfer"].get("curve", [])) - len(full["scratch"].get("curve", []))
    first = "epoch" if extra == 1 else f"{extra} epochs"
    head_first = f"; transfer's first {first}: its head on frozen features" if extra > 0 else ""  # then as scratch's
    ax_epochs.set_xlabel(f"epoch (all training on the full data{head_first})")
    ax_epochs.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_epochs.set_ylabel(ylabel)
    ax_frac.set_xlabel("fraction of the training set")
    ax_frac.set_ylabel(f"test {results['score']}")
    ax_frac.set_xscale("log")
    ticks = [float(f) for f in fractions]  # the fractions run, written as given: log ticks read "6x10^-1"
    ax_frac.set_xticks(ticks, fractions)
    ax_frac.minorticks_off()
    for ax in (ax_epochs, ax_frac):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    verdict = results["verdict"]
    title = verdict["message"].split(". ")[0][:110]
    if verdict.get("within_chance"):  # the caution is the message's last sentence, past what the title shows
        title += f"\n(a gap within chance on {results.get('n_test')} test examples)"
    fig.suptitle(title, fontsize=9)
    _save(fig, Path(path))
