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


RUN_MARK = ".headstart"  # in every folder a command writes: what --force may replace
# What the commands wrote before the mark existed: a folder holding one of these is an earlier output too.
OUTPUT_FILES = ("config.yaml", "metrics.json", "rank.json", "compare.json", "lr_find.json", "study.db", "model/model.json")


def prepare_run_dir(out: str | Path, force: bool, keep=(), resume: bool = False) -> Path:
    """A new, empty output folder. `--force` replaces only an earlier output, and never one that is or holds what
    this command reads (`keep`: the data, a run:DIR body, the run being updated): a fit's --out set to its own data
    folder, or to the run it starts from, deleted it before a line was read. `resume`: an interrupted fit's folder
    is kept as it is (an empty or missing one starts afresh)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if resume and out.is_dir() and any(out.iterdir()):
        if (out / "metrics.json").exists():
            raise UserError(f"{out} holds a finished run: nothing to resume (--force fits it again)")
        if not (out / RUN_MARK).exists() or not (out / "config.yaml").exists():
            raise UserError(f"{out} holds no interrupted headstart fit to resume; give the --out of the fit that stopped")
        return out
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"run directory {out} exists and is not empty; pass --force to replace it, or choose another --out")
        _check_replaceable(out, keep)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RUN_MARK, "written by headstart; --force may replace this folder\n")
    return out


def remove_if_unused(out: Path) -> None:
    """A run that failed before writing anything (bad data, an unknown model) leaves no folder behind."""
    if out.is_dir() and all(p.name == RUN_MARK for p in out.iterdir()):
        shutil.rmtree(out)


def _check_replaceable(out: Path, keep) -> None:
    here = out.resolve()
    for path in _paths(keep):
        if here == path.resolve() or here in path.resolve().parents:
            raise UserError(f"--out {out} holds {path}, which this command reads; --force would delete it: choose another --out")
    if not ((out / RUN_MARK).exists() or any((out / name).exists() for name in OUTPUT_FILES)):
        raise UserError(f"--out {out} holds files no headstart command wrote; --force replaces only an earlier run: "
                        "choose another --out")


def _paths(given) -> list[Path]:
    """The paths among a command's inputs: data, lists of them, `run:DIR` bodies (a model name that is no path
    resolves under the working folder, where no --out to replace would hold it)."""
    if given is None:
        return []
    if isinstance(given, (list, tuple)):
        return [p for g in given for p in _paths(g)]
    text = str(given)
    return [Path(text[4:] if text.startswith("run:") else text)] if text else []


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
