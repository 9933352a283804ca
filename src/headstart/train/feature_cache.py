"""Frozen work is done once: pooled features of a frozen backbone, cached on disk.

Keyed by backbone (name + weights digest), preprocessing, and each input's content hash (a file's bytes, a
text, a row), so a re-run with the same data and backbone never runs the backbone again, and adding inputs
computes only the new ones.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from headstart.io_utils import atomic_write
from headstart.train.batches import map_batches


def default_cache_dir() -> Path:
    root = os.environ.get("HEADSTART_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "headstart")
    return Path(root) / "features"


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

    def features(self, key: str, inputs: list, hashes: list[str], extract) -> torch.Tensor:
        """Features for `inputs` (content `hashes`) in order; `extract(missing_inputs)` computes the ones not cached."""
        known = self._load(key)
        missing = list({h: x for h, x in zip(hashes, inputs) if h not in known}.items())
        self.hits += len(inputs) - sum(1 for h in hashes if h not in known)
        if missing:
            feats = extract([x for _, x in missing])
            self._store(key, [h for h, _ in missing], feats)
            known.update(zip([h for h, _ in missing], feats))
            self.computed += len(missing)
        return torch.stack([known[h] for h in hashes]) if inputs else torch.empty(0)


def extract_features(backbone, inputs: list, batch_size: int, device: torch.device, num_workers: int, on_batch=None) -> torch.Tensor:
    """One forward pass of the frozen body over `inputs` in eval mode; [N, D] float32 on the CPU."""
    backbone.eval().to(device)
    return map_batches(backbone.forward_features, backbone, inputs, batch_size, device, num_workers, on_batch)


def features_of(cache: FeatureCache, backbone, modality, inputs: list, batch_size: int, device: torch.device,
                num_workers: int, progress, label: str) -> tuple[torch.Tensor, int, float]:
    """Frozen-body features of `inputs` through the cache: (features, inputs computed now, seconds computing)."""
    import time

    from headstart.progress import EVAL_COST

    spent = {"n": 0, "seconds": 0.0}

    def extract(missing: list) -> torch.Tensor:
        start = time.perf_counter()
        progress.open(f"features ({label})", total=len(missing), unit=modality.input_noun)
        feats = extract_features(backbone, missing, batch_size, device, num_workers,
                                 on_batch=lambda n: progress.advance(n, EVAL_COST * n))
        progress.close()
        spent["n"], spent["seconds"] = len(missing), time.perf_counter() - start
        return feats

    hits_before = cache.hits
    feats = cache.features(backbone.cache_key(), inputs, [modality.input_key(x) for x in inputs], extract)
    progress.total -= (cache.hits - hits_before) * EVAL_COST  # planned, but already cached
    return feats, spent["n"], spent["seconds"]
