"""A table with nothing to transfer: the mlp body (wide and deep, starting from the linear model) against the plain MLP
it replaced and the classical model, side by side on the same splits.

    python benchmarks/tables.py                 # seeds 0-4, every table
    python benchmarks/tables.py --seeds 0,1 --tables diabetes,carseats

Tables are ones scikit-learn ships or makes (no download; not headstart's shared sets, so the default is not tuned
to them), plus Carseats where ../shared/data is present:

  diabetes       regression, 442 rows x 10        breast_cancer  2 classes, 569 x 30     wine  3 classes, 178 x 13
  friedman1      regression, 400 x 10, y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise: non-linear
  clusters       2 classes, 400 x 12, each class 3 Gaussian clusters (make_classification): non-linear
  carseats       regression on Sales, 400 x 10 with 3 categorical columns

Each is fitted by `headstart fit TABLE --target y` with every option at its default; the seed draws the split
(70/15/15) and the initialisation. Methods, on the same split for one seed:

  wide & deep   the mlp body (default): the head solved on the encoded columns first, then every layer trained
  plain MLP     the body before (MLPBody(wide=False)): random initialisation, all layers trained (finetune)
  classical     ridge (regression) or logistic regression (classification) on the same encoded columns, the
                `baseline` every such fit reports beside its own score

Scores on the test split: R² for regression, accuracy for classification. Prints a markdown table with the mean ±
std over seeds and the paired difference wide & deep minus each other method (t interval; "level" when it covers 0).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import headstart as hs
from headstart.backbones import tabular

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table, mean_std, paired_verdict  # noqa: E402


def tables() -> dict[str, pd.DataFrame]:
    """Each table with its target in column y."""
    from sklearn import datasets

    out = {"diabetes": datasets.load_diabetes(as_frame=True).frame.rename(columns={"target": "y"})}
    cancer = datasets.load_breast_cancer(as_frame=True).frame
    out["breast_cancer"] = cancer.assign(y=cancer.pop("target").map({0: "malignant", 1: "benign"}))
    wine = datasets.load_wine(as_frame=True).frame
    out["wine"] = wine.assign(y="cultivar " + wine.pop("target").astype(str))
    x, y = datasets.make_friedman1(n_samples=400, noise=1.0, random_state=0)
    out["friedman1"] = pd.DataFrame(x, columns=[f"x{i}" for i in range(1, 11)]).assign(y=y)
    x, y = datasets.make_classification(n_samples=400, n_features=12, n_informative=6, n_clusters_per_class=3, random_state=0)
    out["clusters"] = pd.DataFrame(x, columns=[f"x{i}" for i in range(1, 13)]).assign(y=np.where(y, "a", "b"))
    carseats = SHARED / "carseats" / "all.csv"
    if carseats.is_file():
        out["carseats"] = pd.read_csv(carseats).rename(columns={"Sales": "y"})
    return out


def fit(csv: Path, out: Path, seed: int, wide: bool) -> dict:
    tabular.WIDE = wide  # MLPBody reads it when the body is made
    try:
        start = time.perf_counter()
        metrics = hs.fit(str(csv), target="y", out=str(out), seed=seed, progress=False).metrics
    finally:
        tabular.WIDE = True
    metric = metrics["baseline"]["metric"]
    return {"score": metrics[metric], "classical": metrics["baseline"]["score"], "metric": metric,
            "seconds": time.perf_counter() - start, "picked": metrics["stages"]["auto"]["picked"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--tables", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = tables()
    if args.tables:
        chosen = {k: v for k, v in chosen.items() if k in args.tables.split(",")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in chosen.items():
            csv = Path(tmp) / f"{name}.csv"
            frame.to_csv(csv, index=False)
            scores = {"wide & deep": [], "plain MLP": [], "classical": []}
            seconds = {"wide & deep": [], "plain MLP": []}
            for seed in seeds:
                wide = fit(csv, Path(tmp) / f"{name}-wide-{seed}", seed, wide=True)
                plain = fit(csv, Path(tmp) / f"{name}-plain-{seed}", seed, wide=False)
                assert abs(wide["classical"] - plain["classical"]) < 1e-9, "both fits saw the same split"
                for method, result in (("wide & deep", wide), ("plain MLP", plain)):
                    scores[method].append(result["score"])
                    seconds[method].append(result["seconds"])
                scores["classical"].append(wide["classical"])
                print(f"{name} seed {seed}: wide {wide['score']:.4f} ({wide['picked']}), plain {plain['score']:.4f} "
                      f"({plain['picked']}), classical {wide['classical']:.4f}", flush=True)
            metric = "R²" if wide["metric"] == "r2" else "accuracy"
            cells = [f"{m:.3f} ± {s:.3f}" for m, s in (mean_std(scores[k]) for k in scores)]
            diffs = [paired_verdict([a - b for a, b in zip(scores["wide & deep"], scores[k])]) for k in ("plain MLP", "classical")]
            times = [f"{mean_std(seconds[k])[0]:.1f}" for k in seconds]
            rows.append([name, metric, len(frame), *cells, *diffs, *times])
    print()
    print(machine_line())
    print(f"python benchmarks/tables.py --seeds {args.seeds}" + (f" --tables {args.tables}" if args.tables else ""))
    print()
    print(markdown_table(["table", "test", "rows", "wide & deep (default)", "plain MLP (before)", "classical",
                          "wide & deep - plain", "wide & deep - classical", "s wide", "s plain"], rows))


if __name__ == "__main__":
    main()
