"""Shared fixtures: tiny image folders the tests make themselves, an isolated feature cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COLORS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_images(folder: Path, classes=("red", "green", "blue"), per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Class folders of noisy coloured squares: easy for any ImageNet backbone, cheap to run."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(COLORS[name], dtype=np.float32)
            img = np.clip(base + rng.normal(0, 35, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / name / f"{name}_{i:03d}.png")
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_images(tmp_path) -> Path:
    return make_images(tmp_path / "colors")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One two-stage fit shared by the read-only tests (fit, load, evaluate, predict)."""
    import headstart as hs

    root = tmp_path_factory.mktemp("shared_run")
    data = make_images(root / "colors", per_class=14)
    run = hs.fit(str(data), strategy="two-stage", out=str(root / "run"), image_size=64, head_epochs=15, epochs=2,
                 batch_size=8, cache_dir=str(root / "cache"), progress=False)
    return run, data


def needs_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (the shared benchmark data sits beside the repository only on the team's machines)")
    return path
