"""Several targets from one body (`--target a,b`) against one fit per target, side by side on the same rows.

    python benchmarks/multitask.py                 # seeds 0-2, every table
    python benchmarks/multitask.py --seeds 0 --tables wine

Tables scikit-learn ships, each with a class column and a number column to predict from the others (not headstart's
shared sets, so nothing is tuned to them), plus Carseats (Sales and US) where ../shared/data is present:

  wine           cultivar (3 classes) and alcohol, from the other 12 measurements, 178 rows
  breast_cancer  diagnosis (2 classes) and mean radius, from the other 29 measurements, 569 rows
  diabetes       sex (2 classes) and disease progression, from the other 9 columns, 442 rows

The seed draws a 75/25 train/test split written as train.csv/test.csv (so every arm is scored on the same test rows;
headstart splits validation off train), and the fits' initialisation. Arms, every option at its default:

  multi-task   `fit --target NUMBER,CLASS`: one body, a head per target
  separate     `fit --target NUMBER` and `fit --target CLASS`, each without the other target column (the features
               the multi-task fit reads), two bodies

Prints test R² (number) and accuracy (class), mean ± std over seeds, and the wall seconds of each arm.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import headstart as hs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sklearn_table(name: str) -> tuple[pd.DataFrame, str, str]:
    from sklearn import datasets

    if name == "wine":
        frame = datasets.load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
        frame["cultivar"] = frame["cultivar"].map({0: "a", 1: "b", 2: "c"})
        return frame, "alcohol", "cultivar"
    if name == "breast_cancer":
        frame = datasets.load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
        frame["diagnosis"] = frame["diagnosis"].map({0: "malignant", 1: "benign"})
        return frame, "mean radius", "diagnosis"
    if name == "diabetes":
        frame = datasets.load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
        frame["sex"] = frame["sex"].map({1.0: "one", 2.0: "two"})
        return frame, "progression", "sex"
    if name == "carseats":
        return pd.read_csv(SHARED / "carseats" / "all.csv"), "Sales", "US"
    raise SystemExit(f"unknown table {name}")


def write_split(frame: pd.DataFrame, folder: Path, seed: int, drop: list[str] = ()) -> Path:
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(0.75 * len(frame))
    folder.mkdir(parents=True)
    frame.drop(columns=list(drop)).iloc[order[:cut]].to_csv(folder / "train.csv", index=False)
    frame.drop(columns=list(drop)).iloc[order[cut:]].to_csv(folder / "test.csv", index=False)
    return folder


def arms(frame: pd.DataFrame, number: str, label: str, seed: int, root: Path) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the fits' summaries: only the table is printed
        return _arms(frame, number, label, seed, root)


def _arms(frame: pd.DataFrame, number: str, label: str, seed: int, root: Path) -> dict:
    options = dict(seed=seed, progress=False)
    started = time.perf_counter()
    both = hs.fit(str(write_split(frame, root / "both", seed)), target=f"{number},{label}", out=str(root / "run-both"),
                  **options)
    multi_seconds = time.perf_counter() - started
    started = time.perf_counter()
    alone_number = hs.fit(str(write_split(frame, root / "number", seed, drop=[label])), target=number,
                          out=str(root / "run-number"), **options)
    alone_label = hs.fit(str(write_split(frame, root / "label", seed, drop=[number])), target=label,
                         out=str(root / "run-label"), **options)
    return {"multi r2": both.metrics["targets"][number]["r2"], "multi acc": both.metrics["targets"][label]["accuracy"],
            "multi s": multi_seconds, "separate r2": alone_number.metrics["r2"],
            "separate acc": alone_label.metrics["accuracy"], "separate s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tables", default="wine,breast_cancer,diabetes,carseats")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    tables = [t for t in args.tables.split(",") if t != "carseats" or (SHARED / "carseats").is_dir()]
    print("| table | targets | multi-task R² | separate R² | multi-task acc | separate acc | seconds multi / separate |")
    print("|---|---|---|---|---|---|---|")
    for name in tables:
        frame, number, label = sklearn_table(name)
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(arms(frame, number, label, seed, Path(tmp)))
        got = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        cell = lambda k: f"{got[k].mean():.3f} ± {got[k].std():.3f}"  # noqa: E731
        print(f"| {name} | {number} (R²), {label} (acc) | {cell('multi r2')} | {cell('separate r2')} | "
              f"{cell('multi acc')} | {cell('separate acc')} | {got['multi s'].mean():.1f} / {got['separate s'].mean():.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
