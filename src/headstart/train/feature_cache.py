"""Frozen work is done once: pooled features of a frozen backbone, cached on disk.

Keyed by backbone (name + weights digest), preprocessing, and each file's content hash, so a re-run with the
same data and backbone never runs the backbone again, and adding files computes only the new ones.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from headstart.io_utils import atomic_write


def default_cache_dir() -> Path:
    root = os.environ.get("HEADSTART_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "headstart")
    return Path(root) / "features"


def content_hash(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """Shards of `[N, D]` features under `<dir>/<backbone cache key>/`, each with its content hashes."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.computed = 0

    def _load(self, key: str) -> dict[str, torch.Tensor]:
        known: dict[str, torch.Tensor] = {}
        folder = self.root / key
        for shard in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            tensors = load_file(str(shard))
            hashes = (folder / (shard.stem + ".hashes")).read_text().split()
            known.update(zip(hashes, tensors["features"]))
        return known

    def _store(self, key: str, hashes: list[str], feats: torch.Tensor) -> None:
        folder = self.root / key
        stem = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        # hashes first: a shard without its hash list is ignored, never misread.
        atomic_write(folder / f"{stem}.hashes", lambda tmp: Path(tmp).write_text("\n".join(hashes)))
        atomic_write(folder / f"{stem}.safetensors", lambda tmp: save_file({"features": feats.contiguous()}, tmp))

    def features(self, key: str, paths: list[str], extract) -> torch.Tensor:
        """Features for `paths` in order; `extract(missing_paths)` computes the ones not cached."""
        hashes = [content_hash(p) for p in paths]
        known = self._load(key)
        missing = sorted({h: p for h, p in zip(hashes, paths) if h not in known}.items())
        self.hits += len(paths) - len(missing)
        if missing:
            feats = extract([p for _, p in missing])
            self._store(key, [h for h, _ in missing], feats)
            known.update(zip([h for h, _ in missing], feats))
            self.computed += len(missing)
        return torch.stack([known[h] for h in hashes]) if paths else torch.empty(0)


@torch.no_grad()
def extract_features(backbone, dataset, batch_size: int, device: torch.device, num_workers: int, on_batch=None) -> torch.Tensor:
    """One forward pass over `dataset` in eval mode; [N, D] float32 on the CPU."""
    backbone.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out = []
    for x, _ in loader:
        x = x.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = backbone.forward_features(x)
        out.append(f.float().cpu())
        if on_batch:
            on_batch(len(x))
    return torch.cat(out)
