"""Scaffolding shared by the benchmark scripts: the machine line, stratified subsamples, markdown tables."""
from __future__ import annotations

import csv
import os
import platform
import random
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

# ../shared/data beside the checkout; HEADSTART_BENCH_DATA points elsewhere (a GPU machine, where ../shared does not
# travel: benchmarks/device_kit.py carries a subset)
SHARED = Path(os.environ.get("HEADSTART_BENCH_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) rows of a text set's CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def machine_line() -> str:
    """Date, CPU and the vector instructions torch's kernels use, cores/threads, torch version and accelerator: the line
    every results table starts with. The instructions belong there because they move results, not only speed: the
    same quick anchors run on one machine gave hs-default 0.562 with AVX2 kernels and 0.583 with plain ones
    (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41), the sums' rounding steering two epochs on 32 images."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{time.strftime('%Y-%m-%d')}, {cpu} ({torch.backends.cpu.get_cpu_capability()} kernels), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {accelerator()}")


def accelerator() -> str:
    """The GPU's name, read without starting CUDA in this process where nvidia-smi can tell: anchors.py forks its
    contenders, and a child forked after its parent started CUDA cannot use the GPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
            if names:
                return f"GPU {names[0]}" + (f" x {len(names)}" if len(names) > 1 else "")
        except (OSError, subprocess.SubprocessError):
            pass
    import torch

    return f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU only"


def stratified(items: list, labels: list, per_class: int = 0, max_classes: int = 0, seed: int = 0) -> list:
    """At most `per_class` items of each label (0: all) from at most `max_classes` labels (0: all; the first
    ones in sorted order), chosen at random with `seed`; the result keeps the input order."""
    by_label: dict = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    kept_labels = sorted(by_label)[:max_classes] if max_classes else sorted(by_label)
    rng = random.Random(seed)
    keep: list[int] = []
    for y in kept_labels:
        idx = by_label[y]
        keep += rng.sample(idx, per_class) if per_class and per_class < len(idx) else idx
    return [items[i] for i in sorted(keep)]


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    s = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, s


def paired_verdict(differences: list[float], level: float = 0.95) -> str:
    """The mean of per-draw differences, their std, the t interval of the mean and what it allows one to say:
    "ahead" or "behind" when the interval excludes 0, "level" when it does not (the draws cannot tell them apart).
    With 3 draws the interval is the mean ± 2.48 std (t at 2 degrees of freedom), so only a gap larger than the
    draws' spread is a verdict; 10 draws narrow it to ± 0.72 std."""
    from scipy.stats import t

    mean, std = mean_std(differences)
    n = len(differences)
    if n < 2:
        return f"{mean:+.3f} (1 draw)"
    half = float(t.ppf((1 + level) / 2, n - 1)) * std / n ** 0.5
    low, high = mean - half, mean + half
    verdict = "ahead" if low > 0 else "behind" if high < 0 else "level"
    return f"{mean:+.3f} ± {std:.3f} [{low:+.3f}, {high:+.3f}] {verdict}"
