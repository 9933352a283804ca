"""Has the data moved away from what the model was trained and scored on? (`headstart monitor`)

A fit keeps a reference (model/reference.safetensors): the saved model's body features and outputs on its held-out
rows (the test split, and the validation split where training never saw it), and their labels (for `update`, which
replays them when the old data is gone). `monitor` passes new inputs through the same body and compares, as
Rabanser et al. ("Failing Loudly", NeurIPS 2019) found works best on real shifts:

- features: a two-sample Kolmogorov-Smirnov test on each of the reference features' top principal components
  (COMPONENTS at most, and at most a quarter of the reference rows), Bonferroni-corrected over them;
- outputs: the same test on each output (a class's probability, a label's, the regression value): black-box shift
  detection, which sees what the model does with the change;
- predicted classes (classification): a chi-square test of the two predicted-class counts (label shift).

Drift is called when the smallest corrected p-value, corrected again over the tests, is below `alpha`. Each new input
also gets its cosine distance to the nearest reference input's features: farther than NOVEL_QUANTILE of the reference
inputs are from their own nearest neighbour, it is listed as unlike the reference. Under NOVEL_MIN_REFERENCE
reference rows none is listed: three rows' nearest-neighbour distances set no threshold (27 of 38 photos of the
reference's own kind were flagged). A reference of a few rows can only show large shifts: the verdict says how many
rows it rests on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from headstart.errors import UserError

REFERENCE_FILE = "reference.safetensors"
COMPONENTS = 32  # principal components of the features kept: Rabanser et al. reduce to 32 as well
REFERENCE_ROWS = 1000  # held-out rows at most in a reference
NOVEL_QUANTILE = 0.99
NOVEL_MIN_REFERENCE = 20
ALPHA = 0.05


def build_reference(features: torch.Tensor, outputs: np.ndarray, split: str, seed: int = 0,
                    labels: list | torch.Tensor | None = None) -> dict:
    """The reference of a model: features [N, D] and outputs [N, ...] of rows it did not train on, at most
    REFERENCE_ROWS of them (features in float16: 2.5 MB for EfficientNet-Lite0's 1280 at most), and their `labels`
    where known (class indices, or regression values): `update` without the old data replays them to the head."""
    idx = np.arange(len(features))
    if len(idx) > REFERENCE_ROWS:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), REFERENCE_ROWS, replace=False))
    reference = {"features": features[idx].to(torch.float16),
                 "outputs": torch.as_tensor(np.asarray(outputs)[idx], dtype=torch.float32).reshape(len(idx), -1),
                 "split": split}
    if labels is not None:
        reference["labels"] = torch.as_tensor(np.asarray(labels))[idx]
    return reference


def save_reference(folder: str | Path, reference: dict) -> None:
    from safetensors.torch import save_file

    from headstart.io_utils import atomic_write

    tensors = {k: v.contiguous() for k, v in reference.items() if isinstance(v, torch.Tensor)}
    atomic_write(Path(folder) / REFERENCE_FILE, lambda tmp: save_file(tensors, tmp, metadata={"split": reference["split"]}))


def load_reference(folder: str | Path) -> dict | None:
    from safetensors import safe_open

    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()} | {"split": (f.metadata() or {}).get("split", "?")}


def principal_axes(reference: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, the top COMPONENTS principal axes) of the reference features: the top right singular vectors."""
    x = reference["features"].double()
    mean = x.mean(0)
    # At most a quarter of the rows: a few rows' smallest axes fit their own noise, and along those any new rows look
    # spread out (33 rows, 32 components: same-domain squares gave p=0.048 on the 32nd alone).
    k = max(1, min(COMPONENTS, len(x) // 4, x.shape[1]))
    return mean, torch.linalg.svd(x - mean, full_matrices=False)[2][:k]


def project(basis: tuple[torch.Tensor, torch.Tensor], features: torch.Tensor) -> np.ndarray:
    mean, components = basis
    return ((features.double() - mean) @ components.T).numpy()


def check_drift(reference: dict, features: torch.Tensor, outputs: np.ndarray, task: str, classes: list[str],
                alpha: float = ALPHA) -> dict:
    """The tests of this module's docstring: p-values, the verdict, and each new input's distance to the reference."""
    from scipy.stats import chi2_contingency, ks_2samp

    basis = principal_axes(reference)
    ref_z, new_z = project(basis, reference["features"]), project(basis, features)
    ref_out, new_out = reference["outputs"].numpy(), np.asarray(outputs, dtype=np.float64).reshape(len(new_z), -1)
    tests = {"features": _bonferroni([ks_2samp(ref_z[:, j], new_z[:, j]).pvalue for j in range(ref_z.shape[1])],
                                     [f"component {j + 1}" for j in range(ref_z.shape[1])])}
    names = {"classification": classes, "multilabel": classes, "multitask": classes}.get(task, ["prediction"])
    tests["outputs"] = _bonferroni([ks_2samp(ref_out[:, j], new_out[:, j]).pvalue for j in range(ref_out.shape[1])],
                                   [f"{'probability of ' if task in ('classification', 'multilabel') else ''}{n}"
                                    for n in names])  # a multi-task's outputs are named "target=class" or "target"
    counts = {}
    if task == "classification":
        ref_counts = np.bincount(ref_out.argmax(1), minlength=len(classes))
        new_counts = np.bincount(new_out.argmax(1), minlength=len(classes))
        seen = (ref_counts + new_counts) > 0
        if seen.sum() >= 2:
            tests["predicted classes"] = {"p": float(chi2_contingency(np.stack([ref_counts[seen], new_counts[seen]]))[1]),
                                          "tests": 1, "most_shifted": None}
        counts = {c: {"reference": int(r) / len(ref_out), "new": int(n) / len(new_out)}
                  for c, r, n in zip(classes, ref_counts, new_counts)}
    p = min(1.0, min(t["p"] for t in tests.values()) * len(tests))
    distance, ref_distance = _nearest_distances(reference["features"].float().numpy(), features.float().numpy())
    enough = len(ref_distance) >= NOVEL_MIN_REFERENCE
    threshold = float(np.quantile(ref_distance, NOVEL_QUANTILE)) if enough else None  # null in JSON: no threshold
    report = {"drift": bool(p < alpha), "p": p, "alpha": alpha, "reference_rows": len(ref_z), "reference_split": reference["split"],
              "new_rows": len(new_z), "tests": tests, "novel_threshold": threshold,
              "novel_rows": int((distance > threshold).sum()) if enough else None, "distance": distance.tolist()}
    if counts:
        report["predicted_share"] = counts
    if task == "classification":
        report["confidence"] = {"reference": float(ref_out.max(1).mean()), "new": float(new_out.max(1).mean())}
    return report


def verdict(report: dict) -> str:
    """One line: drift or not, on which test, with how many rows."""
    tests = "; ".join(f"{name} p={t['p']:.3g}" + (f" ({t['most_shifted']})" if t.get("most_shifted") else "")
                      for name, t in report["tests"].items())
    head = (f"DRIFT (p={report['p']:.3g} < {report['alpha']})" if report["drift"]
            else f"no drift shown (p={report['p']:.3g} >= {report['alpha']})")
    few = " - few rows: only a large shift can show" if min(report["reference_rows"], report["new_rows"]) < 30 else ""
    novel = (f"{report['novel_rows']} new input(s) unlike any reference input" if report["novel_threshold"] is not None
             else f"too few reference rows to name inputs unlike them ({NOVEL_MIN_REFERENCE} needed)")
    return (f"{head}: {tests}; {report['new_rows']} new vs {report['reference_rows']} reference rows "
            f"({report['reference_split']}){few}; {novel}")


def _bonferroni(pvalues: list[float], names: list[str]) -> dict:
    j = int(np.argmin(pvalues))
    return {"p": float(min(1.0, pvalues[j] * len(pvalues))), "tests": len(pvalues), "most_shifted": names[j]}


def _nearest_distances(ref: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each new row's cosine distance to its nearest reference row, and each reference row's to its nearest other
    one (cosine, as for the kNN signals: a pooled embedding's direction carries what it saw)."""
    from sklearn.neighbors import NearestNeighbors

    if len(ref) < 2:
        return np.zeros(len(new)), np.zeros(0)
    nn = NearestNeighbors(n_neighbors=2, metric="cosine").fit(ref)
    return nn.kneighbors(new, n_neighbors=1)[0][:, 0], nn.kneighbors(ref)[0][:, 1]


def require_reference(reference: dict | None, run_path: Path) -> dict:
    if reference is None:
        raise UserError(f"{run_path} has no reference to compare with (fitted before `monitor` existed): give "
                        "--reference DATA, inputs like those it was trained on (its validation or test data)")
    return reference


def save_check(folder: Path, report: dict, reference: dict, features: torch.Tensor, outputs: np.ndarray, task: str,
               names: list[str], predicted: list, distance: np.ndarray) -> None:
    """One check's folder: monitor.json (the report), inputs.csv (each input's prediction and distance), drift.png."""
    import csv
    import io

    from headstart.io_utils import write_json, write_text

    write_json(folder / "monitor.json", report)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["input", "predicted", "distance_to_reference", "unlike_reference"])
    threshold = report["novel_threshold"]
    writer.writerows([n, p, round(float(d), 6), "" if threshold is None else int(d > threshold)]
                     for n, p, d in zip(names, predicted, distance))
    write_text(folder / "inputs.csv", buf.getvalue())
    plot_drift(reference, features, outputs, report | {"distance": distance}, task, folder / "drift.png")


def plot_drift(reference: dict, features: torch.Tensor, outputs: np.ndarray, report: dict, task: str, path: Path) -> None:
    """Three panels: the most shifted component, the outputs (confidence or value), the distances to the reference."""
    from headstart.plots import _save, plt

    basis = principal_axes(reference)
    ref_z, new_z = project(basis, reference["features"]), project(basis, features)
    j = int(report["tests"]["features"]["most_shifted"].split()[-1]) - 1
    ref_out, new_out = reference["outputs"].numpy(), np.asarray(outputs).reshape(len(new_z), -1)
    if task == "classification":
        ref_o, new_o, what = ref_out.max(1), new_out.max(1), "confidence (top class probability)"
    else:
        ref_o, new_o = ref_out[:, 0], new_out[:, 0]  # the value (regression), the first label's probability
        what = {"regression": "output", "multilabel": "first label's probability"}.get(task, "first output")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (ref, new, title) in zip(axes[:2], [(ref_z[:, j], new_z[:, j], f"feature component {j + 1} (most shifted)"),
                                                 (ref_o, new_o, what)]):
        bins = np.histogram_bin_edges(np.concatenate([ref, new]), bins=20)
        ax.hist(ref, bins=bins, alpha=0.6, density=True, label=f"reference ({len(ref)})")
        ax.hist(new, bins=bins, alpha=0.6, density=True, label=f"new ({len(new)})")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    ax.hist(report["distance"], bins=20, color="tab:orange", alpha=0.8)
    if report["novel_threshold"] is not None:
        ax.axvline(report["novel_threshold"], color="red", ls="--", label=f"{NOVEL_QUANTILE:.0%} of reference")
        ax.legend(fontsize=8)
    ax.set_title("new inputs: cosine distance to the nearest reference input", fontsize=10)
    fig.suptitle(verdict(report).split(":")[0], fontsize=11, color="red" if report["drift"] else "black")
    _save(fig, Path(path))
