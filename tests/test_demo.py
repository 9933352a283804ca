"""The README demo's own parts: the exported digits, the raw-pixel baseline on the fit's split, and the verdict."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.config import FitConfig
from headstart.data.images import load_image_data
from headstart.demo import export_digits, raw_pixel_baseline, verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import demo_draws  # noqa: E402


def test_digits_export_as_dark_ink_class_folders_and_the_baseline_scores_them(tmp_path):
    folder = export_digits(tmp_path / "digits")
    pngs = sorted(folder.glob("*/*.png"))
    assert len(pngs) == 1797 and sorted(p.name for p in folder.iterdir()) == [str(d) for d in range(10)]
    first = Image.open(folder / "0" / "digit_0000.png")
    assert first.size == (8, 8) and first.mode == "L"
    assert first.getpixel((0, 0)) == 255 and np.asarray(first).min() < 64  # white paper, dark ink
    before = pngs[0].stat().st_mtime_ns
    export_digits(folder)  # idempotent: nothing is rewritten
    assert pngs[0].stat().st_mtime_ns == before

    defaults = FitConfig(data="")  # the split `headstart demo` uses
    score = raw_pixel_baseline(folder, defaults.val_fraction, defaults.test_fraction, defaults.seed)
    assert 0.93 < score < 0.99  # the textbook ~0.96 of a linear model on the 64 pixels

    # benchmarks/demo_draws.py: its manifest is the demo's split, in the demo's order, whatever seed a fit then uses
    demo = load_image_data(folder, defaults.val_fraction, defaults.test_fraction, defaults.seed)
    assert demo_draws.write_demo_split(folder, tmp_path / "split.csv") == len(demo.test) == 270
    fixed = load_image_data(tmp_path / "split.csv", defaults.val_fraction, defaults.test_fraction, seed=3)
    assert fixed.layout == "manifest" and fixed.classes == demo.classes
    for split in ("train", "val", "test"):
        assert getattr(fixed, split) == [(str(Path(p).resolve()), y) for p, y in getattr(demo, split)]


def test_verdict_counts_test_digits_wrong_and_calls_a_tie_a_tie():
    assert verdict(0.9889, 0.9667, 270).startswith("transfer beat the baseline (3 of 270 test digits wrong, against 9)")
    assert verdict(0.9667, 0.9667, 270).startswith("level with the baseline (9 of 270 test digits wrong each)")
    assert verdict(0.9593, 0.9667, 270).startswith("transfer did NOT beat the baseline (11 of 270 test digits wrong, against 9)")
