"""Does `fit --adapt-to` help where the inputs to predict differ from the labeled ones, and what does it cost where
they do not? Measured side by side.

    python benchmarks/adaptation.py                          # every case, linear-probe and auto, draws 0-2
    python benchmarks/adaptation.py --cases 'flowers: grey + blur' --strategies linear-probe --draws 0

Each case is a labeled source (a set's train split) and a target made from another split of the same set, shifted
as a camera, a scanner or a light would shift it. Each draw splits the target in halves at random: one half is given
unlabeled to `--adapt-to`, the other is scored (with its labels, which no fit sees). Every fit is scored on the
scored half with and without `--adapt-to` (same seed), so the paired column is the adaptation's own effect.

  flowers: grey + blur        tf_flowers train (400) -> val (200) grey and Gaussian-blurred (radius 3)
  hymenoptera: dark           hymenoptera train (244) -> val (153) at half brightness and 0.6 contrast
  cifar10: noise              cifar10_subset, 40 train / 30 test images per class -> test with Gaussian noise (sd 40)
  flowers: no shift           the control: val as it is; adapting should cost nothing
  flowers: 2 classes (no shift), (grey + blur)
                              label shift: the target holds 2 of the 5 classes, which the alignment assumes away
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line, markdown_table, mean_std, paired_verdict, stratified  # noqa: E402


def grey_blur(im):
    from PIL import ImageFilter

    return im.convert("L").convert("RGB").filter(ImageFilter.GaussianBlur(3))


def dark(im):
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(0.5)).enhance(0.6)


def noise(im):
    import numpy as np
    from PIL import Image

    pixels = np.asarray(im).astype(np.float32)
    pixels += np.random.default_rng(zlib.crc32(im.tobytes())).normal(0, 40, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def same(im):
    return im


# name: (set, source split, target split, shift, per class in source / target (0: all), target classes (0: all))
CASES = {
    "flowers: grey + blur": ("tf_flowers", "train", "val", grey_blur, (0, 0), 0),
    "hymenoptera: dark": ("hymenoptera", "train", "val", dark, (0, 0), 0),
    "cifar10: noise": ("cifar10_subset", "train", "test", noise, (40, 30), 0),
    "flowers: no shift": ("tf_flowers", "train", "val", same, (0, 0), 0),
    "flowers: 2 classes (no shift)": ("tf_flowers", "train", "val", same, (0, 0), 2),
    "flowers: 2 classes (grey + blur)": ("tf_flowers", "train", "val", grey_blur, (0, 0), 2),
}


def images(folder: Path, per_class: int, max_classes: int = 0) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return stratified(files, [f.parent.name for f in files], per_class, max_classes)


def build(case: str, root: Path, draws: list[int]) -> tuple[Path, dict]:
    """(labeled source folder, {draw: (unlabeled target half, labeled scored half)})."""
    from PIL import Image

    name, source_split, target_split, shift, (n_source, n_target), classes = CASES[case]
    labeled = root / "source"
    for f in images(SHARED / name / source_split, n_source):
        (labeled / "train" / f.parent.name).mkdir(parents=True, exist_ok=True)
        (labeled / "train" / f.parent.name / f.name).symlink_to(f.resolve())
    target = []
    for f in images(SHARED / name / target_split, n_target, classes):
        out = root / "target" / f.parent.name / f"{f.stem}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        shift(Image.open(f).convert("RGB")).save(out)
        target.append(out)
    halves = {}
    for draw in draws:
        order = target[:]
        random.Random(draw).shuffle(order)
        for half, files in (("adapt", order[: len(order) // 2]), ("scored", order[len(order) // 2:])):
            for f in files:
                (root / f"draw{draw}" / half / f.parent.name).mkdir(parents=True, exist_ok=True)
                (root / f"draw{draw}" / half / f.parent.name / f.name).symlink_to(f)
        halves[draw] = (root / f"draw{draw}" / "adapt", root / f"draw{draw}" / "scored")
    return labeled, halves


def measure(case: str, root: Path, draws: list[int], strategies: list[str], image_size: int) -> list[list[str]]:
    labeled, halves = build(case, root, draws)
    rows = []
    for strategy in strategies:
        scores = {False: [], True: []}
        seconds, gaps, changed, picked = {False: [], True: []}, [], [], set()
        for draw in draws:
            adapt, scored = halves[draw]
            for adapting in (False, True):
                start = time.perf_counter()
                run = hs.fit(str(labeled), strategy=strategy, seed=draw, image_size=image_size, progress=False,
                             adapt_to=[str(adapt)] if adapting else None,
                             out=str(root / "fits" / f"{strategy}-{draw}-{adapting}"))
                seconds[adapting].append(time.perf_counter() - start)
                scores[adapting].append(run.evaluate(str(scored))["accuracy"])
                picked.add(run.metrics["stages"].get("auto", {}).get("picked"))
                if adapting:
                    note = run.metrics["adaptation"]
                    gaps.append((note["domain_gap"]["before"], note["domain_gap"]["after"]))
                    changed.append(note["target_predictions_changed"])
        label = strategy + (f" -> {', '.join(sorted(p for p in picked if p))}" if picked - {None} else "")
        for adapting in (False, True):
            m, s = mean_std(scores[adapting])
            rows.append([case, label, "--adapt-to" if adapting else "source only", f"{m:.3f} ± {s:.3f}",
                         " ".join(f"{x:.3f}" for x in scores[adapting]),
                         paired_verdict([a - b for a, b in zip(scores[True], scores[False])]) if adapting else "",
                         (f"{mean_std([g[0] for g in gaps])[0]:.2f} -> {mean_std([g[1] for g in gaps])[0]:.2f}, "
                          f"{mean_std(changed)[0]:.0%} changed") if adapting else "",
                         f"{mean_std(seconds[adapting])[0]:.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (default: all)")
    parser.add_argument("--strategies", default="linear-probe,auto")
    parser.add_argument("--draws", default="0,1,2")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: the cases are made from its image sets")
    draws = [int(d) for d in args.draws.split(",")]
    print(machine_line())
    print(f"command: python benchmarks/adaptation.py --cases '{args.cases}' --strategies {args.strategies} "
          f"--draws {args.draws} --image-size {args.image_size}\n")
    header = ["case", "strategy", "fit", "scored-half accuracy", "per draw", "adapted minus source only: mean ± std "
              "[95% CI]", "domain gap before -> after; target predictions changed", "fit s"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(args.cases.split(",")):
            rows += measure(case, Path(tmp) / f"case{i}", draws, args.strategies.split(","), args.image_size)
            print(markdown_table(header, rows[-2 * len(args.strategies.split(",")):]), flush=True)
    print("\n" + markdown_table(header, rows))


if __name__ == "__main__":
    main()
