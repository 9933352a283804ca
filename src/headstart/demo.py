"""The README's main job, with no downloads: scikit-learn's digits as an image folder, then a two-stage fit.

It also fits a raw-pixel logistic regression on the very same split, so the summary shows whether transfer
beat the classical baseline (it should: ~0.96 for the baseline; a linear probe on ImageNet features alone
does not get there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from headstart.data.images import load_image_data


def export_digits(folder: str | Path) -> Path:
    """Write the 1,797 8x8 digits as PNGs in class folders `0`..`9` (idempotent)."""
    from sklearn.datasets import load_digits

    folder = Path(folder)
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        path = folder / str(label) / f"digit_{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((255 - img * 255 / 16).astype(np.uint8), mode="L").save(path)  # dark ink on white
    return folder


def raw_pixel_baseline(data_dir: str | Path, val_fraction: float, test_fraction: float, seed: int) -> float:
    """Logistic regression on raw pixels, trained on train+val, scored on the fit's test split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    data = load_image_data(data_dir, val_fraction, test_fraction, seed)

    def arrays(items):
        x = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() for p, _ in items])
        return x, np.array([y for _, y in items])

    x_train, y_train = arrays(data.train + data.val)
    x_test, y_test = arrays(data.test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(clf.fit(x_train, y_train).score(x_test, y_test))


def verdict(accuracy: float, baseline: float, n: int) -> str:
    """Say whether transfer beat the raw pixels, in test digits wrong: a tie is a tie, not a loss or a win."""
    wrong, baseline_wrong = round((1 - accuracy) * n), round((1 - baseline) * n)
    if wrong < baseline_wrong:
        return f"transfer beat the baseline ({wrong} of {n} test digits wrong, against {baseline_wrong})"
    if wrong == baseline_wrong:
        return f"level with the baseline ({wrong} of {n} test digits wrong each): transfer did not help on this draw"
    return f"transfer did NOT beat the baseline ({wrong} of {n} test digits wrong, against {baseline_wrong})"
