"""The learning-rate range test: a sensible suggestion, weights untouched, and --lr auto wired into fine-tuning."""
import numpy as np
import pytest

import headstart as hs
from headstart.train.lr_find import suggest


def test_suggestion_is_the_steepest_descent():
    lrs = list(np.logspace(-6, 0, 60))
    losses = [2.0 - 1.5 / (1 + np.exp(-(np.log10(lr) + 3) * 4)) for lr in lrs]  # falls fastest at 1e-3
    losses[-3:] = [5.0, 9.0, 20.0]  # divergence at the end
    assert suggest(lrs, losses) == pytest.approx(1e-3, rel=0.3)


def test_lr_find_and_lr_auto(tiny_images, tmp_path):
    options = dict(image_size=64, batch_size=8, progress=False, cache_dir=str(tmp_path / "cache"), num_workers=0)
    result = hs.lr_find(str(tiny_images), out=str(tmp_path / "lr"), steps=25, **options)
    assert 1e-7 <= result["suggestion"] <= 1.0 and len(result["lrs"]) == len(result["losses"]) >= 6
    assert all(a < b for a, b in zip(result["lrs"], result["lrs"][1:])), "rates grow"
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 5000
    run = hs.fit(str(tiny_images), out=str(tmp_path / "fit"), lr="auto", epochs=1, **options)
    chosen = run.metrics["stages"]["lr_find"]["suggestion"]
    assert 1e-7 <= chosen <= 1.0
    import yaml

    assert yaml.safe_load((run.path / "config.yaml").read_text())["lr"] == "auto", "config.yaml keeps the request"
    fine = [r for r in run.history if r["stage"] == "finetune" and r["epoch"] >= 1]
    assert fine and max(r["lr"] for r in fine) <= chosen * 1.0001, "fine-tuning ran at the suggested peak rate"
