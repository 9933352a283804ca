"""Audio benchmark: FSDD spoken digits (../shared/data/fsdd), official split (2,700 train / 300 test clips).

    python benchmarks/audio.py                                   # linear-probe and two-stage, default options
    python benchmarks/audio.py --strategies two-stage --set epochs=3 --set image_size=96 --threads 1

`splits.csv` is the manifest: its `split` column is honoured (test = recordings 0-4 of every speaker and
digit), the validation set is split off train by headstart (15 %, stratified). Every fit is scored on the 300
test clips. Options given with --set are passed to `headstart.fit` as they are and shown in the table;
everything else is headstart's default. By default each fit gets a fresh feature cache, so its wall time
includes feature extraction (--shared-cache reuses one cache across the fits of a run). --threads N limits
torch and the BLAS libraries (numpy/scipy/scikit-learn) to N threads. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

import torch

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402 - the benchmarks' shared scaffolding

FSDD = SHARED / "fsdd"


def parse_sets(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def fit_and_score(strategy: str, out: Path, cache: str, **options) -> dict:
    start = time.perf_counter()
    run = hs.fit(str(FSDD / "splits.csv"), strategy=strategy, out=str(out), force=True, cache_dir=cache, **options)
    wall = time.perf_counter() - start
    m = run.metrics
    stages = m["stages"]
    feats = stages.get("features", {"inputs": 0, "seconds": 0})
    return {
        "accuracy": m["accuracy"],
        "n_test": m.get("n"),
        "split": m["split"],
        "input": run.model.preprocess.describe(),
        "wall_s": wall,
        "features_s": feats["seconds"],
        "features_clips_s": feats["inputs"] / feats["seconds"] if feats["seconds"] else float("nan"),
        "head_s": stages.get("head", {}).get("seconds", 0.0),
        "finetune_s": stages.get("finetune", {}).get("seconds", 0.0),
        "best_epochs": {k: f"{v['best_epoch']}/{v['epochs_run']}" for k, v in stages.items() if "best_epoch" in v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="linear-probe,two-stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a headstart.fit option for every fit")
    parser.add_argument("--out", default="runs/bench-audio")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: the libraries' own)")
    parser.add_argument("--shared-cache", action="store_true", help="one feature cache for all fits of this run")
    args = parser.parse_args()
    if not (FSDD / "splits.csv").is_file():
        sys.exit(f"benchmark data not found at {FSDD}")
    options = parse_sets(args.set)
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as shared:
        for strategy in args.strategies.split(","):
            with tempfile.TemporaryDirectory() as own:
                cache = shared if args.shared_cache else own
                result = fit_and_score(strategy, Path(args.out) / f"fsdd-{strategy}", cache, progress=False, **options)
            rows.append({"strategy": strategy, **result})
            print(f"fsdd {strategy:14} acc {result['accuracy']:.4f}  wall {result['wall_s']:.0f}s", flush=True)

    shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    print(f"\n{machine_line()}{f' (--threads {args.threads})' if args.threads else ''}; options: {shown}")
    print("\n| set | strategy | options | input | test accuracy | features s | features clips/s | head s | fine-tune s "
          "| best epoch/run | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| fsdd | {r['strategy']} | {shown} | {r['input']} | {r['accuracy']:.4f} (n={r['n_test']}, {r['split']}) | {r['features_s']:.1f} | "
              f"{r['features_clips_s']:.1f} | {r['head_s']:.1f} | {r['finetune_s']:.1f} | {r['best_epochs']} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
