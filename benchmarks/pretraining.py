"""Does `headstart pretrain` on unlabeled inputs help a fit from few labels? Measured side by side.

    python benchmarks/pretraining.py                    # digits (scikit-learn), + ag_news, tf_flowers, carseats from ../shared/data
    python benchmarks/pretraining.py --sets digits --draws 0
    python benchmarks/pretraining.py --sets flowers-shift --variants 'crops and flips,default views'

Each set has a pool of unlabeled inputs and a test split the pre-training never sees. The bundled body, and that
body after `pretrain` on the pool, are each fitted from K labeled examples per class drawn from the pool (draws
0-2), with `--strategy linear-probe` (how good the features are) and the default `auto` (what a user gets), and
scored on the test split.

  digits   scikit-learn's 8x8 digits as images (1,258 pool, 539 test), 10 labels per class; 96 px. Strokes are far
           from ImageNet's photos: the case continued pre-training is for. Four pre-trainings: the photo views
           (crops of 0.35-1 of the area, flips) and views kept legible (--flip off --crop-scale 0.8), each with and
           without SimCLR's colour distortion and blur (the defaults: --colour 0.5 --blur 0.5).
  ag_news  2,000 news texts of its train split as the pool, 8 labels per class (SetFit's setting), 1,000 test texts;
           minilm-l6, whose sentence embedding was already trained contrastively on a billion pairs.
  flowers-shift  domain adaptation: tf_flowers' 400 labeled train photos, scored on its 200 val photos made grey and
           blurred; the pre-training pool is both (the target's inputs, never its labels), 128 px, 3 fine-tuning
           epochs; all labels are used, so a draw is a seed of the pre-training and of the fit. Pre-trained with crops
           and flips alone, with the default colour distortion and blur, and with SimCLR's ImageNet strength
           (--colour 1).
  carseats High = Sales > 8 (ISLR's classification), 10 labels per class from the train split's 320 rows (the pool,
           without High), 80 test rows; the mlp body, random init against SCARF pre-training on the pool.

Prints a markdown table per set: test accuracy (mean ± std over the draws) and seconds.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import headstart as hs
from headstart.demo import export_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table, mean_std, read_rows, write_rows  # noqa: E402

STRATEGIES = ("linear-probe", "auto")
NO_DISTORTION = {"colour": 0.0, "blur": 0.0}  # the images' views before colour distortion and blur (2026-12-06)


def link(files: list[Path], folder: Path) -> None:
    for f in files:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / f.parent.name / f.name).symlink_to(f.resolve())


def digits_set(root: Path, shots: int, draws: list[int]):
    """(pool folder, {draw: labeled folder with train/ and test/}, fit options, pretrain variants)."""
    source = export_digits(root / "digits")
    rng = random.Random(0)
    pool, test = [], []
    for c in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(c.iterdir())
        rng.shuffle(files)
        cut = round(0.3 * len(files))
        test += files[:cut]
        pool += files[cut:]
    link(pool, root / "pool")
    by_class = {}
    for f in pool:
        by_class.setdefault(f.parent.name, []).append(f)
    labeled = {}
    for draw in draws:
        r = random.Random(draw)
        link([f for c in sorted(by_class) for f in r.sample(by_class[c], shots)], root / f"labeled{draw}" / "train")
        link(test, root / f"labeled{draw}" / "test")
        labeled[draw] = root / f"labeled{draw}"
    legible = {"flip": "off", "crop_scale": 0.8}
    variants = {"pretrain (crops and flips: --colour 0 --blur 0)": NO_DISTORTION, "pretrain (default views)": {},
                "pretrain (--flip off --crop-scale 0.8 --colour 0 --blur 0)": {**legible, **NO_DISTORTION},
                "pretrain (--flip off --crop-scale 0.8)": legible}
    return root / "pool", labeled, {"image_size": 96}, "efficientnet_lite0", variants


def ag_news_set(root: Path, shots: int, draws: list[int], pool_size: int = 2000, test_size: int = 1000):
    rows, test_rows = read_rows(SHARED / "ag_news" / "train.csv"), read_rows(SHARED / "ag_news" / "test.csv")
    pool = random.Random(0).sample(rows, pool_size)
    test = random.Random(1).sample(test_rows, test_size)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pool.txt").write_text("".join(" ".join(t.split()) + "\n" for t, _ in pool))
    by_class = {}
    for t, y in pool:
        by_class.setdefault(y, []).append((t, y))
    labeled = {}
    for draw in draws:
        r = random.Random(draw)
        folder = root / f"labeled{draw}"
        folder.mkdir()
        write_rows(folder / "train.csv", [row for y in sorted(by_class) for row in r.sample(by_class[y], shots)])
        write_rows(folder / "test.csv", test)
        labeled[draw] = folder
    return root / "pool.txt", labeled, {}, "minilm-l6", {"pretrain (SimCSE views: dropout)": {}}


def flowers_shift_set(root: Path, shots: int, draws: list[int]):
    """Domain adaptation: tf_flowers' labeled train photos (source) against its val photos grey and blurred (target,
    unlabeled); the pool is both, as unsupervised domain adaptation has it (the target's inputs, not its labels)."""
    from PIL import Image, ImageFilter

    flowers = SHARED / "tf_flowers"
    target = root / "target"
    for f in sorted((flowers / "val").rglob("*.jpg")):
        out = target / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(3)).save(out, quality=90)
    link(sorted((flowers / "train").rglob("*.jpg")), root / "pool" / "source")
    link(sorted(target.rglob("*.jpg")), root / "pool" / "target")
    labeled = root / "labeled"
    link(sorted((flowers / "train").rglob("*.jpg")), labeled / "train")
    link(sorted(target.rglob("*.jpg")), labeled / "test")
    return root / "pool", {d: labeled for d in draws}, {"image_size": 128, "epochs": 3}, "efficientnet_lite0", \
        {"pretrain (source + target, crops and flips: --colour 0 --blur 0)": NO_DISTORTION,
         "pretrain (source + target, default views)": {}, "pretrain (source + target, --colour 1)": {"colour": 1.0}}


def carseats_set(root: Path, shots: int, draws: list[int]):
    """ISLR's classification of Carseats: High = Sales > 8, Sales itself dropped; the pool is the train split's rows
    without High."""
    import numpy as np
    import pandas as pd

    tables = {}
    for split in ("train", "test"):
        df = pd.read_csv(SHARED / "carseats" / f"{split}.csv")
        tables[split] = df.assign(High=np.where(df["Sales"] > 8, "Yes", "No")).drop(columns=["Sales"])
    root.mkdir(parents=True, exist_ok=True)
    tables["train"].drop(columns=["High"]).to_csv(root / "pool.csv", index=False)
    labeled = {}
    for draw in draws:
        folder = root / f"labeled{draw}"
        folder.mkdir()
        tables["train"].groupby("High").sample(shots, random_state=draw).to_csv(folder / "train.csv", index=False)
        tables["test"].to_csv(folder / "test.csv", index=False)
        labeled[draw] = folder
    return root / "pool.csv", labeled, {"target": "High"}, "mlp", {"pretrain (SCARF views)": {}}


# name: (builder, labels per class, what a draw varies): "labels", each draw fits its own labeled rows from one
# pre-training; "seed", every label is used, so each draw is a seed of both the pre-training and the fit.
SETS = {"digits": (digits_set, 10, "labels"), "ag_news": (ag_news_set, 8, "labels"),
        "flowers-shift": (flowers_shift_set, 80, "seed"), "carseats": (carseats_set, 10, "labels")}
UNTRAINED = {"mlp": "mlp (random init)"}  # a body headstart trains itself: nothing shipped to start from


def measure(name: str, root: Path, draws: list[int], wanted: list[str]) -> list[list[str]]:
    make, shots, varies = SETS[name]
    pool, labeled, options, body, variants = make(root, shots, draws)
    if wanted:
        variants = {k: v for k, v in variants.items() if any(w in k for w in wanted)}
    seeds = draws if varies == "seed" else draws[:1]
    bodies = {UNTRAINED.get(body, f"{body} (bundled)"): ({d: body for d in draws}, 0.0)}
    for label, extra in variants.items():
        settings = {k: v for k, v in {**options, **extra}.items() if k != "epochs"}  # pretrain keeps its own epochs
        models, spent = {}, []
        for seed in seeds:
            start = time.perf_counter()
            run = hs.pretrain(str(pool), model=body, out=str(root / f"pre-{len(bodies)}-{seed}"), seed=seed,
                              progress=False, **settings)
            models[seed] = f"run:{run.path}"
            spent.append(time.perf_counter() - start)
        bodies[label] = ({d: models.get(d, models[seeds[0]]) for d in draws}, mean_std(spent)[0])
    rows = []
    for label, (model_of, pretrain_seconds) in bodies.items():
        for strategy in STRATEGIES:
            scores, seconds, picked = [], [], []
            for draw in draws:
                start = time.perf_counter()
                run = hs.fit(str(labeled[draw]), model=model_of[draw], strategy=strategy, seed=draw, progress=False,
                             out=str(root / "fits" / f"{len(rows)}-{draw}"), **options)
                seconds.append(time.perf_counter() - start)
                scores.append(run.metrics["accuracy"])
                picked.append(run.metrics["stages"].get("auto", {}).get("picked"))
            m, s = mean_std(scores)
            picks = ", ".join(sorted({p for p in picked if p}))
            rows.append([label, strategy + (f" -> {picks}" if picks else ""), f"{m:.3f} ± {s:.3f}",
                         " ".join(f"{x:.3f}" for x in scores), f"{pretrain_seconds:.0f}", f"{mean_std(seconds)[0]:.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--draws", default="0,1,2")
    parser.add_argument("--variants", default="", help="pre-trainings to run: comma-separated parts of their labels "
                        "(default: all)")
    args = parser.parse_args()
    draws = [int(d) for d in args.draws.split(",")]
    print(machine_line())
    variants = f" --variants '{args.variants}'" if args.variants else ""
    print(f"command: python benchmarks/pretraining.py --sets {args.sets} --draws {args.draws}{variants}\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            if name != "digits" and not SHARED.is_dir():
                print(f"{name}: {SHARED} is absent, skipped\n")
                continue
            rows = measure(name, Path(tmp) / name, draws, [v for v in args.variants.split(",") if v])
            print(f"### {name} ({SETS[name][1]} labels per class)\n")
            print(markdown_table(["body", "strategy", "test accuracy", "per draw", "pretrain s", "fit s"], rows))
            print(flush=True)


if __name__ == "__main__":
    main()
