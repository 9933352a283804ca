"""Decoding large photos: every pixel against libjpeg's reduced scale (`open_rgb(path, min_side)`), side by side.

    python benchmarks/decode.py                    # 12 hymenoptera photos enlarged to 4032x3024 (a phone's 12 MP)
    python benchmarks/decode.py --size 1600x1200 --photos 20

For the three places a fit decodes an image: the readability check (`check_image`, once per file), the eval
entry of the image cache (resize to 256 px and centre-crop 224: features, evaluation, prediction) and the
training entry (shorter side 258 px, then random crops each epoch). Each row times the full decode and the
drafted one on the same files in one process, and gives how far apart their pixels land (mean |difference| of the
uint8 results, 0-255).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, machine_line  # noqa: E402


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    sources = sorted((SHARED / "hymenoptera" / "train").rglob("*.jpg"))[:n]
    paths = []
    for i, src in enumerate(sources):
        path = folder / f"photo{i}.jpg"
        Image.open(src).convert("RGB").resize(size, Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


def per_image_ms(decode, paths: list[str], repeats: int) -> float:
    decode(paths[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for p in paths:
            decode(p)
    return (time.perf_counter() - start) / (repeats * len(paths)) * 1e3


def main() -> None:
    from headstart.backbones import create_backbone
    from headstart.data import images
    from headstart.data.image_cache import EvalEntry, TrainEntry, to_uint8_chw

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--size", default="4032x3024", help="WxH the photos are enlarged to")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    pre = create_backbone("efficientnet_lite0").preprocess
    evaluation, training = EvalEntry(pre), TrainEntry(pre)

    def eval_every_pixel(path):  # EvalEntry.decode before drafting
        return to_uint8_chw(evaluation.geometry(images.open_rgb(path)))

    def train_every_pixel(path):  # TrainEntry.decode before drafting
        img = images.open_rgb(path)
        return to_uint8_chw(training.resize(img) if min(img.size) > training.side else img)

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), args.photos, size)
        rows = []
        for name, full, drafted in (("eval entry (256 px, crop 224)", eval_every_pixel, evaluation.decode),
                                    ("training entry (258 px)", train_every_pixel, training.decode)):
            full_ms, drafted_ms = per_image_ms(full, paths, args.repeats), per_image_ms(drafted, paths, args.repeats)
            gap = np.mean([(full(p).int() - drafted(p).int()).abs().float().mean().item() for p in paths])
            rows.append((name, full_ms, drafted_ms, gap))

        def check_full(p):
            with Image.open(p) as img:
                img.load()
        check_ms = per_image_ms(check_full, paths, args.repeats)
        rows.append(("readability check", check_ms, per_image_ms(images.check_image, paths, args.repeats), float("nan")))

    print(f"\n{machine_line()}\n`python benchmarks/decode.py --photos {args.photos} --size {args.size}`: "
          f"{args.photos} hymenoptera photos enlarged to {size[0]}x{size[1]} (JPEG quality 90)\n")
    print("| decode | every pixel, ms/img | drafted, ms/img | speed-up | mean abs pixel difference (0-255) |")
    print("|---|---|---|---|---|")
    for name, full_ms, drafted_ms, gap in rows:
        print(f"| {name} | {full_ms:.1f} | {drafted_ms:.1f} | {full_ms / drafted_ms:.1f}x | "
              f"{'-' if np.isnan(gap) else f'{gap:.2f}'} |")


if __name__ == "__main__":
    main()
