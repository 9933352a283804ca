"""Out of GPU memory, for real: a fit whose batch cannot fit trains anyway, at half the batch (accumulated).

    python benchmarks/gpu_memory.py                  # on a GPU machine (the images device kit runs it)
    python benchmarks/gpu_memory.py --cap-gib 4 --batch-size 512

The process's GPU memory is capped (torch.cuda.set_per_process_memory_fraction) so that fine-tuning
efficientnet_lite0 at 224 px cannot hold --batch-size images a step. Two fits on the same synthetic images
(coloured squares with noise, made here), side by side:

  asked     --batch-size B under the cap: runs out, starts the stage again at B/2 x 2 accumulated, ... (train/memory.py)
  fits      --batch-size b, the batch the first fit ended at, uncapped: the same micro-batches, each its own optimizer
            step (what a user would have had to find by hand, and a different recipe)

Prints a table: what each trained at, the stage's seconds, test accuracy, and peak GPU memory. Without a GPU it says
so and exits 0 (nothing to measure: on a CPU headstart names a smaller --batch-size instead, tests/test_memory.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import headstart as hs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table  # noqa: E402

COLORS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_images(folder: Path, per_class: int, size: int = 224) -> Path:
    rng = np.random.default_rng(0)
    for name, color in COLORS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(color, np.float32) + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / name / f"{i:04d}.png")
    return folder


def fit(data: Path, out: Path, batch_size: int) -> tuple[dict, float]:
    torch.cuda.reset_peak_memory_stats()
    metrics = hs.fit(str(data), strategy="finetune", out=str(out), image_size=224, epochs=1, batch_size=batch_size,
                     progress=False).metrics
    return metrics, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-gib", type=float, default=4.0, help="GPU memory this process may use (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=512, help="the batch asked for under the cap (default %(default)s)")
    parser.add_argument("--per-class", type=int, default=400, help="synthetic images per class, 3 classes (default %(default)s)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU here: nothing to measure (on a CPU an out-of-memory error names a smaller --batch-size)")
        return
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    with tempfile.TemporaryDirectory() as tmp:
        data = make_images(Path(tmp) / "squares", args.per_class)
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib / total))
        start = time.perf_counter()
        asked, asked_peak = fit(data, Path(tmp) / "asked", args.batch_size)
        asked_s = time.perf_counter() - start
        note = asked["stages"]["finetune"].get("memory", "it fitted: raise --batch-size or lower --cap-gib")
        print(f"under {args.cap_gib:g} GiB at {args.batch_size} a step: {note}", flush=True)
        torch.cuda.set_per_process_memory_fraction(1.0)
        ended = asked["stages"]["finetune"].get("memory")
        small = int(ended.split("trained ")[1].split(" a step")[0]) if ended else args.batch_size
        start = time.perf_counter()
        fits, fits_peak = fit(data, Path(tmp) / "fits", small)
        fits_s = time.perf_counter() - start
    rows = [[f"{args.batch_size} under a {args.cap_gib:g} GiB cap", note, f"{asked_s:.1f}",
             f"{asked['stages']['finetune']['seconds']:.1f}", f"{asked['accuracy']:.3f}", f"{asked_peak:.2f}"],
            [f"{small}, uncapped", "as asked", f"{fits_s:.1f}", f"{fits['stages']['finetune']['seconds']:.1f}",
             f"{fits['accuracy']:.3f}", f"{fits_peak:.2f}"]]
    print()
    print(machine_line())
    print(f"python benchmarks/gpu_memory.py --cap-gib {args.cap_gib:g} --batch-size {args.batch_size} --per-class {args.per_class}")
    print()
    print(markdown_table(["batch asked", "trained at", "fit s", "fine-tuning s", "test accuracy", "peak GiB"], rows))


if __name__ == "__main__":
    main()
