"""Do the rank scores predict which backbone fine-tunes best? LogME / kNN / probe vs fine-tuned accuracy.

    python benchmarks/ranking.py                                   # image sets, the three bundled EfficientNet-Lites
    python benchmarks/ranking.py --sets hymenoptera --image-size 160 --epochs 3 --max-train 300
    python benchmarks/ranking.py --sets ag_news --models minilm-l6 --sources sst2,banking77 --max-train 1000 --max-test 1000
    python benchmarks/ranking.py --sets fsdd --models mel-efficientnet_lite0,mel-efficientnet_lite1,mel-efficientnet_lite2 --max-train 300

Text has one bundled body, so its candidates are source models: `--sources` first develops one per named text
set (minilm-l6 fitted on at most --max-train of its rows, two-stage) and adds each as `run:DIR`, so the
question becomes "which earlier model should this task start from", the develop-then-reuse approach.

For each set: `hs.rank` scores every candidate on train (+ val), then each candidate is fitted with the
two-stage recipe (`--strategy`) and scored on test (or val); Kendall's tau between each score and the fitted accuracy says
how well the score ranks. With three candidates tau is one of -1, -1/3, 1/3, 1: read it with that in mind.
Prints a markdown table for benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402 - the benchmarks' shared scaffolding
from strategies import text_folder  # noqa: E402
from text import TEXT_SETS  # noqa: E402

MODELS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def subset_manifest(root: Path, max_train: int, seed: int, folder: Path) -> Path:
    """A CSV manifest with at most `max_train` training images (a seeded random draw, as the tables were measured) and
    the set's own val/test."""
    import csv
    import random

    from headstart.data.files import SPLIT_NAMES
    from headstart.data.images import is_image

    rows = []
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if (root / name).is_dir():
                items = [(str(p), p.parent.name) for p in sorted((root / name).rglob("*")) if p.is_file() and is_image(p)]
                if split == "train" and max_train and len(items) > max_train:
                    random.Random(seed).shuffle(items)
                    items = items[:max_train]
                rows += [{"path": p, "label": c, "split": split} for p, c in items]
                break
    path = folder / f"{root.name}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def subset_splits(root: Path, max_train: int, seed: int, folder: Path) -> Path:
    """The set's splits.csv with at most `max_train` of its train rows (stratified), paths made absolute."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    rows = pd.read_csv(root / "splits.csv")
    rows["path"] = [str(root / p) for p in rows["path"]]
    train = rows[rows["split"] == "train"]
    if max_train and len(train) > max_train:
        keep, _ = train_test_split(train, train_size=max_train, random_state=seed, stratify=train["label"])
        rows = pd.concat([keep, rows[rows["split"] != "train"]])
    path = folder / f"{root.name}.csv"
    rows.to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="hymenoptera,tf_flowers")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--image-size", type=int, default=None, help="one input size for every candidate (default: auto)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: headstart's)")
    parser.add_argument("--max-train", type=int, default=0, help="subsample the training images/rows (0: all)")
    parser.add_argument("--max-test", type=int, default=0, help="text: subsample the scored rows (0: all)")
    parser.add_argument("--sources", default="", help="text: develop a source model on each of these sets and rank it too")
    parser.add_argument("--strategy", default="two-stage", help="how each candidate is fitted (default %(default)s)")
    parser.add_argument("--out", default="runs/bench-ranking")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"benchmark data not found at {SHARED}")
    options = {k: v for k, v in {"image_size": args.image_size, "epochs": args.epochs}.items() if v}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models.split(",")
        for source in filter(None, args.sources.split(",")):
            folder = Path(tmp) / f"source-{source}"
            folder.mkdir()
            text_folder(SHARED / source, folder, args.max_train, args.max_test, seed=1)
            out = f"{args.out}/sources/{source}"
            hs.fit(str(folder), model=models[0], strategy="two-stage", out=out, force=True, progress=False, **options)
            models.append(f"run:{out}")
        for name in args.sets.split(","):
            if name in TEXT_SETS:
                data = Path(tmp) / name
                data.mkdir()
                text_folder(SHARED / name, data, args.max_train, args.max_test)
            elif (SHARED / name / "splits.csv").is_file():  # a manifest set (fsdd's clips)
                data = subset_splits(SHARED / name, args.max_train, 0, Path(tmp))
            else:
                data = subset_manifest(SHARED / name, args.max_train, 0, Path(tmp))
            ranked = hs.rank(str(data), ",".join(models), out=f"{args.out}/{name}-rank", force=True, progress=False, **options)
            scores = {r["model"]: r for r in ranked}
            for model in models:
                start = time.perf_counter()
                run = hs.fit(str(data), model=model, strategy=args.strategy, out=f"{args.out}/{name}-{model.replace('/', '_')}",
                             force=True, progress=False, **options)
                scores[model]["fitted"] = run.metrics["accuracy"]
                scores[model]["fit_s"] = time.perf_counter() - start
                print(f"{name:14} {model:20} logme {scores[model]['logme']:.4f} knn {scores[model]['knn']:.4f} "
                      f"probe {scores[model]['probe']:.4f} fitted {scores[model]['fitted']:.4f}", flush=True)
            fitted = [scores[m]["fitted"] for m in models]
            taus = {s: kendalltau([scores[m][s] for m in models], fitted).statistic for s in ("logme", "knn", "probe")}
            for model in models:
                table.append({"set": name, "model": model, **scores[model], **{f"tau_{k}": v for k, v in taus.items()}})

    print(f"\n{machine_line()}; options {options or 'defaults'}, "
          f"max train {args.max_train or 'all'}")
    print(f"\n| set | model | LogME | kNN | probe | rank s | fitted accuracy ({args.strategy}) | fit s | tau LogME | tau kNN | tau probe |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['set']} | {r['model']} | {r['logme']:.4f} | {r['knn']:.4f} | {r['probe']:.4f} | {r['seconds']:.0f} | "
              f"{r['fitted']:.4f} | {r['fit_s']:.0f} | {r['tau_logme']:+.2f} | {r['tau_knn']:+.2f} | {r['tau_probe']:+.2f} |")


if __name__ == "__main__":
    main()
