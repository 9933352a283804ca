"""Lightning's Trainer, configured from the run's config: devices, precision, multi-node, callbacks."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import signal
import sys
import threading
import warnings
import zlib

import lightning as L
import numpy as np
import torch

from headstart.config import FitConfig


def resolve_precision(cfg: FitConfig, backbone=None) -> str:
    """--precision auto: bf16-mixed on a GPU that has it, and on a CPU with native bf16 for a body whose time is matmuls
    (a transformer: 1.45x faster per pair step on 2 Zen 4 cores, same accuracy); 32-true otherwise (a CNN's
    depthwise convolutions gain nothing in bf16 on a CPU, and without the instructions it is emulated, slower)."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.uses_gpu():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if getattr(backbone, "cpu_bf16", False) and cpu_has_bf16() else "32-true"


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 natively (Linux reports it in /proc/cpuinfo)."""
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_stage(seed: int, stage_name: str) -> None:
    """Start a stage's random stream (shuffles, crops, dropout, new weights) from the run's seed and the stage's name.

    So a stage draws the same whatever ran before it in the process: auto's measurements, a head stage that trained
    more or fewer epochs, another fit. `auto` that picks setfit then trains as `--strategy setfit` does, and a refit
    repeats each stage's draws.
    """
    state = np.random.SeedSequence([seed, zlib.crc32(stage_name.encode())]).generate_state(1)[0]
    L.seed_everything(int(state), workers=True, verbose=False)


def parse_devices(devices: str | int):
    if isinstance(devices, int) or devices == "auto":
        return devices
    return int(devices) if str(devices).isdigit() else devices  # "0,1" stays a list spec


def quiet_lightning() -> None:
    """Lightning's banners and tips would bury headstart's own one-screen output; real warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*LeafSpec.*",
        ".*module\\(s\\) in eval mode.*",  # intended: BatchNorm of frozen groups runs in eval mode
        ".*no `val_dataloader`.*",  # intended: setfit's pairs and a refit on train + val have no validation split
    ):
        warnings.filterwarnings("ignore", pattern)


class Trainer(L.Trainer):
    """Lightning's Trainer, but Ctrl-C reaches the caller as KeyboardInterrupt: Lightning answers it with
    sys.exit(1) and leaves SIGINT ignored, so the CLI said nothing and exited 1, and a second Ctrl-C did nothing."""

    def _interruptible(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except SystemExit:
            if not self.interrupted:
                raise
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None

    def fit(self, *args, **kwargs):
        return self._interruptible(super().fit, *args, **kwargs)

    def validate(self, *args, **kwargs):
        return self._interruptible(super().validate, *args, **kwargs)


def make_trainer(cfg: FitConfig, max_epochs: int, callbacks: list, accumulate: int = 1) -> L.Trainer:
    """`accumulate`: optimizer steps on that many batches' gradients (a halved batch out of memory: train/memory.py)."""
    quiet_lightning()
    return Trainer(
        accelerator=cfg.accelerator,
        devices=parse_devices(cfg.devices),
        num_nodes=cfg.num_nodes,
        precision=cfg.resolved.get("precision") or resolve_precision(cfg),  # fitting resolves it with the backbone
        max_epochs=max_epochs,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,  # headstart's own bars carry the whole run's ETA
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


# What the permanent generation held when headstart was imported: 0 on CPython 3.11 and 3.13, a few hundred of the
# interpreter's own objects from start-up on 3.12 (375 on 3.12.1), where a test of "nothing frozen" never froze.
FROZEN_AT_IMPORT = gc.get_freeze_count()


@contextlib.contextmanager
def collecting_only_new_objects():
    """For a fit's length, the objects that existed before it sit in gc's permanent generation, so release_memory's
    collections scan only what the fit made: the ~575k objects torch, transformers, timm and Lightning import cost
    ~0.4 s per full collection on 2 CPU cores, and an image fit collects twice (a setfit fit on 32 cifar10 images,
    3 runs each: 9.21 -> 7.94 s, the same weights).
    Left as is when something froze since the import (a server's pre-fork freeze, an outer fit). Unfreezing at the
    end also releases CPython 3.12's start-up objects to the oldest generation: a few hundred, scanned like any."""
    if gc.get_freeze_count() > FROZEN_AT_IMPORT:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_memory() -> None:
    """Hand freed memory back after a stage. A Lightning fit leaves reference cycles (trainer, module, callbacks)
    that hold activations and optimizer state until the collector runs, and glibc keeps freed heap pages: measured
    on a setfit fit of MiniLM, RSS stayed at 2.4 GB after the fit and grew to 3.6 GB over three fits in one process;
    collected and trimmed it fell back to 0.98 GB, its size before the first fit."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
