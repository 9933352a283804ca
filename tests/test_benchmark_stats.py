"""The anchors table's paired verdict (benchmarks/_common.py): what a per-draw difference allows one to say."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import paired_verdict  # noqa: E402


def test_a_gap_wider_than_the_draws_spread_is_a_verdict():
    assert paired_verdict([0.03, 0.04, 0.05]).endswith("ahead")
    assert paired_verdict([-0.03, -0.04, -0.05]).endswith("behind")


def test_a_mean_inside_the_noise_is_level_and_more_draws_narrow_the_interval():
    three = [-0.07, -0.03, 0.01]  # sst2's first three draws, headstart's default minus the probe (q9, q10x10)
    assert paired_verdict(three) == "-0.030 ± 0.040 [-0.129, +0.069] level"  # the figure benchmarks/README quotes
    # the same spread over 12 draws: the interval shrinks by sqrt(n) and the t quantile, and now excludes 0
    assert paired_verdict(three * 4).endswith("behind")


def test_one_draw_has_no_interval():
    assert paired_verdict([0.02]) == "+0.020 (1 draw)"
