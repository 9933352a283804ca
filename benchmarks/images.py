"""Image benchmark: linear-probe vs two-stage on every image set in ../shared/data, with stage timings.

    python benchmarks/images.py                     # all image sets, default settings
    python benchmarks/images.py --sets hymenoptera --probe-sizes 96,128,224

Each fit gets a fresh feature cache, so its wall time includes feature extraction. Sets with test/ are
scored on test/. Sets with only train/ and val/ depend on --protocol: "given" (default) is what
`headstart fit DATA` does, val/ validates (early stopping) and is scored; "held-out" fits on train/ alone
(validation split off it) and scores val/ as unseen data. Prints a markdown table for benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402 - the benchmarks' shared scaffolding

IMAGE_SETS = ["hymenoptera", "tf_flowers", "cifar10_subset"]


def fit_and_score(root: Path, strategy: str, out: Path, protocol: str, **options) -> dict:
    has_test = (root / "test").is_dir() or protocol == "given"
    data = root if has_test else root / "train"
    extra = {} if has_test else {"test_fraction": 0.0}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        run = hs.fit(str(data), strategy=strategy, out=str(out), force=True, cache_dir=cache, **extra, **options)
        wall = time.perf_counter() - start
    metrics = run.metrics if has_test else run.evaluate(str(root / "val"), save=False)
    stages = run.metrics["stages"]
    feats = stages.get("features", {"inputs": 0, "seconds": 0})
    return {
        "accuracy": metrics["accuracy"],
        "scored_on": {"test": "test", "val": "val (also early stopping)"}[run.metrics["split"]] if has_test else "val (held out)",
        "input_size": hs.load(out).model.preprocess.input_size,
        "wall_s": wall,
        "features_s": feats["seconds"],
        "features_img_s": feats["inputs"] / feats["seconds"] if feats["seconds"] else float("nan"),
        "head_s": stages.get("head", {}).get("seconds", 0.0),
        "finetune_s": stages.get("finetune", {}).get("seconds", 0.0),
        "best_epochs": {k: v["best_epoch"] for k, v in stages.items() if "best_epoch" in v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(IMAGE_SETS))
    parser.add_argument("--strategies", default="linear-probe,two-stage")
    parser.add_argument("--probe-sizes", default="", help="extra linear-probe runs at these input sizes (e.g. 64,96,128,224)")
    parser.add_argument("--out", default="runs/bench-images")
    parser.add_argument("--protocol", choices=["given", "held-out"], default="given")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark data not found at {SHARED}")

    rows = []
    for name in args.sets.split(","):
        root = SHARED / name
        runs = [(s, {}) for s in args.strategies.split(",")]
        runs += [("linear-probe", {"image_size": int(z)}) for z in args.probe_sizes.split(",") if z]
        for strategy, options in runs:
            tag = f"{strategy}" + (f"@{options['image_size']}" if options else "")
            result = fit_and_score(root, strategy, Path(args.out) / f"{name}-{tag}", args.protocol, progress=False, **options)
            rows.append({"set": name, "strategy": tag, **result})
            print(f"{name:16} {tag:18} acc {result['accuracy']:.4f}  wall {result['wall_s']:.0f}s", flush=True)

    print(f"\n{machine_line()}")
    print("\n| set | strategy | input px | accuracy | scored on | features s | features img/s | head s | fine-tune s | best epochs | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['strategy']} | {r['input_size']} | {r['accuracy']:.4f} | {r['scored_on']} | {r['features_s']:.1f} | "
              f"{r['features_img_s']:.1f} | {r['head_s']:.1f} | {r['finetune_s']:.1f} | {r['best_epochs']} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
