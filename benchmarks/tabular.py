"""Tabular transfer benchmark on Carseats: develop a source model, then reuse its body (`--model run:DIR`).

    python benchmarks/tabular.py                      # sizes 20,40,80, seeds 0-4
    python benchmarks/tabular.py --sizes 20 --seeds 0,1

Source: regression on Sales over the stores with US == Yes (258 rows; MLP from scratch by the default fit, 15% test held out
to report its own quality). Target: the US == No stores (142 rows). For each seed, the target rows are
shuffled; the first N (20, 40, 80) are all the target training data there is, the other 142 - N are held out
and scored (R²). Every method sees the same N rows:

  transfer      --model run:SOURCE, two-stage (ridge head on the frozen source body's features, then all
                layers fine-tuned with discriminative rates; fine-tuning keeps the head when no epoch beats it)
  transfer-lp   --model run:SOURCE, linear-probe (only the ridge head; the source body frozen)
  scratch       the same MLP from random initialisation, the default fit (auto: two-stage, the head solved on the
                raw columns first, since the body is wide and deep; before 2026-12-06 it was a plain MLP, finetune)
  ridge         scikit-learn RidgeCV (alpha by leave-one-out CV) on one-hot + standardised columns
  source-only   the source model as is, no target rows used (how far apart the two groups are)
  ridge-pooled  RidgeCV on the source rows and the N target rows together (needs the source data itself,
                which reusing a run does not; the simplest transfer when the tables share one task)

The MLP runs split 20% of the N rows off for early stopping; ridge uses all N (its CV is internal). The `US`
column is dropped (constant within each group). MLP training options are the mlp body's defaults
(MLPBody.default_hparams: 200 epochs, patience 20, lr 3e-3, chosen on US == Yes rows only by simulating 20
and 80 training rows there; the CNN defaults, 10 epochs, give a 16-row table 10 optimizer steps), for the
source, the transfer and the scratch runs alike. Prints a markdown table (mean ± std over seeds).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402 - the benchmarks' shared scaffolding

CARSEATS = SHARED / "carseats" / "all.csv"
TARGET = "Sales"
MLP = dict(progress=False)  # every training option from the mlp body's defaults
METHODS = ["transfer", "transfer-lp", "scratch", "ridge", "source-only", "ridge-pooled"]


def ridge_r2(train: pd.DataFrame, test: pd.DataFrame) -> float:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x = train.drop(columns=[TARGET])
    cats = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    nums = [c for c in x.columns if c not in cats]
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), nums), ("cat", OneHotEncoder(handle_unknown="ignore"), cats)]),
        RidgeCV(alphas=np.logspace(-3, 3, 13)),
    )
    model.fit(x, train[TARGET])
    return float(r2_score(test[TARGET], model.predict(test.drop(columns=[TARGET]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,40,80")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default="runs/bench-tabular")
    args = parser.parse_args()
    if not CARSEATS.is_file():
        sys.exit(f"benchmark data not found at {CARSEATS}")
    sizes, seeds = [int(s) for s in args.sizes.split(",")], [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(CARSEATS)
    source_rows = df[df.US == "Yes"].drop(columns=["US"]).reset_index(drop=True)
    target_rows = df[df.US == "No"].drop(columns=["US"]).reset_index(drop=True)
    source_rows.to_csv(data / "source.csv", index=False)
    cache = tempfile.mkdtemp(prefix="bench-tabular-cache-")

    start = time.perf_counter()
    source = hs.fit(str(data / "source.csv"), target=TARGET, out=str(out / "source"), force=True,
                    cache_dir=cache, **MLP)
    print(f"source (US == Yes, {len(source_rows)} rows): test R² {source.metrics['r2']:.4f} "
          f"in {time.perf_counter() - start:.0f}s", flush=True)

    results: dict[tuple[str, int], list[float]] = {}
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(target_rows))
        for n in sizes:
            train, held = target_rows.iloc[order[:n]], target_rows.iloc[order[n:]]
            folder = data / f"target-n{n}-seed{seed}"
            folder.mkdir(exist_ok=True)
            train.to_csv(folder / "train.csv", index=False)
            held.to_csv(folder / "test.csv", index=False)  # scored, never seen in training or early stopping
            common = dict(target=TARGET, val_fraction=0.2, seed=seed, force=True, cache_dir=cache, **MLP)
            scores = {
                "transfer": hs.fit(str(folder), model=f"run:{source.path}", strategy="two-stage",
                                   out=str(out / f"transfer-n{n}-s{seed}"), **common).metrics["r2"],
                "transfer-lp": hs.fit(str(folder), model=f"run:{source.path}", strategy="linear-probe",
                                      out=str(out / f"transfer-lp-n{n}-s{seed}"), **common).metrics["r2"],
                "scratch": hs.fit(str(folder), out=str(out / f"scratch-n{n}-s{seed}"), **common).metrics["r2"],
                "ridge": ridge_r2(train, held),
                "source-only": source.evaluate(str(folder / "test.csv"), save=False)["r2"],
                "ridge-pooled": ridge_r2(pd.concat([source_rows, train]), held),
            }
            for method, r2 in scores.items():
                results.setdefault((method, n), []).append(r2)
            print(f"seed {seed} n {n:3d}: " + "  ".join(f"{m} {r:.3f}" for m, r in scores.items()), flush=True)

    print(f"\n{machine_line()}; source test R² {source.metrics['r2']:.4f}; {len(seeds)} seeds; "
          f"{time.perf_counter() - start:.0f}s in all")
    print("\nR² on the held-out US == No rows (mean ± std over seeds)\n")
    print("| target train rows | " + " | ".join(METHODS) + " |")
    print("|---|" + "---|" * len(METHODS))
    for n in sizes:
        cells = [f"{np.mean(results[m, n]):.3f} ± {np.std(results[m, n]):.3f}" for m in METHODS]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
