"""Decode and resize each image once per run: uint8 tensors kept in memory, per backbone (so per run).

Without it every fine-tuning epoch and every evaluation pass re-decodes the JPEGs and resizes them again.
Two kinds of entries, each decoded with PIL exactly as the uncached transforms in data/images.py do:

- eval: the deterministic resize + centre crop at the input size, as uint8 [3, s, s]. Only the conversion to
  float and the normalisation remain per item, the same operations `ToTensor` + `Normalize` perform, so the
  tensors are bit-identical to the uncached `eval_transform`.
- train: the image resized once (PIL, the backbone's interpolation) so its shorter side is TRAIN_SCALE x the
  input size (never enlarged), uint8. The random-resized crop (same scale and ratio range) and the flip then
  run on the tensor, every epoch anew.

The cache is filled in the main process when a dataset is built (a thread pool: PIL releases the GIL while
decoding and resizing), so DataLoader workers forked afterwards read it without decoding anything. Workers
still do the per-item crops and normalising: on the shared 2-core machine a cached eval pass of 243 images at
224 px took 1.3 s with one worker, 5.2 s in the main process (per-batch normalising there, torch using 2 threads
per op) and the augmented training pass 1.8 s vs 7.9 s (benchmarks/throughput.py). Its size is
bounded: once the next entries would pass the budget (HEADSTART_IMAGE_CACHE_GB, default 4; 0 turns caching off)
the remaining images are decoded per item as before. A copy of the cache pickled into another process (spawned
DDP processes) starts empty; a deep copy of the backbone shares it.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import v2

from headstart.backbones.base import Preprocess
from headstart.data import images
from headstart.data.augmentation import STANDARD_AUGMENTATION, Augmentation

BUDGET_ENV = "HEADSTART_IMAGE_CACHE_GB"
DEFAULT_BUDGET_GB = 4.0
TRAIN_SCALE = 1.15  # training entries keep a shorter side of 1.15 x the input size for the random crops


def budget_bytes() -> int:
    raw = os.environ.get(BUDGET_ENV, "")
    try:
        gb = float(raw) if raw.strip() else DEFAULT_BUDGET_GB
    except ValueError:
        gb = DEFAULT_BUDGET_GB
    return max(0, int(gb * 1024 ** 3))


def to_uint8_chw(img) -> torch.Tensor:
    """A PIL RGB image as a uint8 [3, H, W] tensor (the values ToTensor would divide by 255)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class EvalEntry:
    """Resize + centre crop at the input size: `images.eval_transform`'s own geometry, before ToTensor."""

    def __init__(self, pre: Preprocess):
        self.geometry = images.eval_geometry(pre)
        self.side = images.eval_side(pre)
        self.key = ("eval", pre.input_size, pre.crop_pct, pre.interpolation)
        self.estimate = 3 * pre.input_size ** 2

    def decode(self, path: str) -> torch.Tensor:
        return to_uint8_chw(self.geometry(images.open_rgb(path, self.side)))


class TrainEntry:
    """The image with its shorter side resized once to TRAIN_SCALE x the input size (smaller images as they are)."""

    def __init__(self, pre: Preprocess):
        self.side = int(round(TRAIN_SCALE * pre.input_size))
        self.resize = T.Resize(self.side, interpolation=T.InterpolationMode(pre.interpolation))
        self.key = ("train", self.side, pre.interpolation)
        self.estimate = 3 * self.side * (self.side * 4 // 3)  # a 4:3 image; the exact size is counted once decoded

    def decode(self, path: str) -> torch.Tensor:
        img = images.open_rgb(path, self.side)
        if min(img.size) > self.side:
            img = self.resize(img)
        return to_uint8_chw(img)


class ImageCache:
    """(path, entry kind) -> uint8 tensor, bounded by a byte budget."""

    def __init__(self, budget: int | None = None):
        self.budget = budget_bytes() if budget is None else budget
        self.entries: dict[tuple, torch.Tensor] = {}
        self.bytes = 0
        self.decoded = 0  # images decoded into the cache (a test and the benchmark read it)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self  # a deep-copied backbone (e.g. a trial) reads the same images

    def __getstate__(self):
        return {"budget": self.budget}

    def __setstate__(self, state):
        self.__init__(state["budget"])

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def tensors(self, paths: list[str], entry) -> list[torch.Tensor | None]:
        """Cached uint8 tensors for `paths` (decoding what is missing and fits the budget); None where not cached."""
        missing = [p for p in dict.fromkeys(paths) if (p, entry.key) not in self.entries]
        room = max(0, self.budget - self.bytes) // max(1, entry.estimate)
        wanted = missing[:room]
        if wanted:
            with ThreadPoolExecutor(max_workers=min(len(wanted), os.cpu_count() or 1)) as pool:
                for path, tensor in zip(wanted, pool.map(_try_decode(entry), wanted)):
                    if tensor is None or self.bytes + tensor.numel() > self.budget:
                        continue  # unreadable (the per-item path raises as before) or over budget
                    with self._lock:
                        self.entries[(path, entry.key)] = tensor
                        self.bytes += tensor.numel()
                        self.decoded += 1
        return [self.entries.get((p, entry.key)) for p in paths]


def _try_decode(entry):
    def decode(path: str) -> torch.Tensor | None:
        try:
            return entry.decode(path)
        except Exception:  # noqa: BLE001 - left to the uncached path, which reports it where it always did
            return None
    return decode


class CachedImageDataset(Dataset):
    """Image files -> model-ready tensors, from the run's cache of uint8 tensors where it holds them.

    Images the cache does not hold (over budget, unreadable) go through `fallback`, the uncached PIL transform.
    """

    def __init__(self, paths: list[str], pre: Preprocess, train: bool, cache: ImageCache,
                 aug: Augmentation = STANDARD_AUGMENTATION):
        self.paths = list(paths)
        entry = TrainEntry(pre) if train else EvalEntry(pre)
        self.side = entry.side  # the uncached path decodes as the cache does
        self.cached = cache.tensors(self.paths, entry) if cache.budget else [None] * len(self.paths)
        self.fallback = images.train_transform(pre, aug) if train else images.eval_transform(pre)
        self.augment = v2.Compose([
            v2.RandomResizedCrop(pre.input_size, scale=(aug.min_scale, 1.0),
                                 interpolation=T.InterpolationMode(pre.interpolation), antialias=True),
            *([v2.RandomHorizontalFlip()] if aug.flip else []),
            *aug.distortions(pre.input_size),
        ]) if train else None
        self.normalize = T.Normalize(pre.mean, pre.std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.cached[i]
        if x is None:
            return self.fallback(images.open_rgb(self.paths[i], self.side))
        if self.augment is not None:
            x = self.augment(x)
        # exactly ToTensor's conversion of a uint8 image, then Normalize: identical values to the uncached path
        return self.normalize(x.to(dtype=torch.get_default_dtype()).div(255))
