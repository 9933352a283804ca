"""The digits demo over several seeds on one split: how much of the demo's figure is the draw.

    python benchmarks/demo_draws.py                 # seeds 0-4, about 15 minutes on 2 CPU cores
    python benchmarks/demo_draws.py --seeds 0,1

`headstart demo` fits one seed, and its 229 validation and 270 test digits are few: one digit is 0.4 points. Here
the demo's split (the fit's default fractions and seed) is written once as a manifest (path,label,split), so every
seed fits the same train/val/test images in the same order; only the fit's seed changes, that is its stages'
random streams (shuffles, crops, dropout, the new head's weights). Seed 0 is the demo's own draw. The raw-pixel
logistic regression (deterministic) is scored on the same test split, and the table ends with the t interval of
headstart's lead over it. Needs no ../shared: the digits come with scikit-learn.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import headstart as hs
from headstart.config import FitConfig
from headstart.data.images import load_image_data
from headstart.demo import export_digits, raw_pixel_baseline, verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, mean_std, paired_verdict  # noqa: E402


def write_demo_split(digits: Path, manifest: Path) -> int:
    """The split `headstart demo` fits, as a manifest in the loader's order; returns the number of test digits."""
    d = FitConfig(data="")
    data = load_image_data(digits, d.val_fraction, d.test_fraction, d.seed)
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for split in ("train", "val", "test"):
            writer.writerows([Path(path).resolve(), data.classes[label], split] for path, label in getattr(data, split))
    return len(data.test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="the fit's seeds, comma-separated (0: the demo's draw)")
    ap.add_argument("--out", default="runs/demo-draws", help="digits, the split manifest and one run per seed")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    digits = export_digits(out / "digits")
    manifest = out / "split.csv"
    n_test = write_demo_split(digits, manifest)
    d = FitConfig(data="")
    baseline = raw_pixel_baseline(digits, d.val_fraction, d.test_fraction, d.seed)

    rows, accuracies = [], []
    for seed in seeds:
        start = time.perf_counter()
        run = hs.fit(str(manifest), model="efficientnet_lite0", seed=seed, out=str(out / f"seed-{seed}"), force=True)
        stages, acc = run.metrics["stages"], run.metrics["accuracy"]
        accuracies.append(acc)
        body = stages.get("finetune", {})
        rows.append([seed, stages.get("auto", {}).get("picked", "-"), f"{stages['head']['best_val_acc']:.3f}",
                     f"{body.get('best_epoch', '-')} / {body.get('epochs_run', '-')}", f"{body.get('best_val_acc', float('nan')):.3f}",
                     f"{acc:.4f}", verdict(acc, baseline, n_test).split(" (")[0], f"{time.perf_counter() - start:.0f} s"])
        print(f"seed {seed}: test {acc:.4f}", flush=True)

    mean, std = mean_std(accuracies)
    table = markdown_table(["seed", "auto picked", "head val acc", "fine-tuning best epoch / run", "its val acc",
                            "test acc", "against the raw pixels", "wall"], rows)
    text = (f"{machine_line()}\n\n`python benchmarks/demo_draws.py --seeds {args.seeds}`; {n_test} test digits, raw-pixel "
            f"logistic regression {baseline:.4f}\n\n{table}\n\nheadstart {mean:.4f} ± {std:.4f} over {len(seeds)} seeds; "
            f"lead over the raw pixels {paired_verdict([a - baseline for a in accuracies])}\n")
    (out / "table.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
