"""The run directory: never overwritten without --force; every file in it written atomically."""
from __future__ import annotations

import csv
import io
import os
import shutil
import time
from pathlib import Path

from headstart.errors import UserError
from headstart.io_utils import write_text


def default_out(data: str) -> Path:
    return Path("runs") / f"{Path(data).stem or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"run directory {out} exists and is not empty; pass --force to replace it, or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def is_launch_primary() -> bool:
    """False in the processes Lightning (or torchrun/SLURM) starts beside the first one of a multi-device run."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def write_history_csv(path: str | Path, rows: list[dict]) -> None:
    metrics = sorted({k for row in rows for k in row if k.startswith(("train_", "val_"))})  # loss, acc or mae
    columns = ["stage", "epoch", *metrics, "lr", "seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def environment(gpu: bool) -> dict:
    """What computed the run, for config.yaml's `resolved`: the same fit gives other figures with other package
    versions, and even on another CPU, whose vector kernels (AVX2, AVX512) round sums differently, which a small fit's
    epochs amplify (benchmarks/README.md, "The CPU's vector instructions move quick figures")."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in ("headstart", "torch", "lightning", "timm", "transformers", "peft", "scikit-learn", "numpy", "pillow"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "python": platform.python_version(),
        "packages": packages,
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if gpu else None,
    }
