"""report.html: self-contained (figures inlined), with its sections, and it renders in headless Chromium."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from headstart.report import render_report

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def test_report_is_self_contained_with_its_sections(tiny_run):
    run, _ = tiny_run
    page = (run.path / "report.html").read_text()
    for section in ("Data", "Metrics per class", "Learning curves", "Calibration", "Most confident mistakes", "Configuration"):
        assert f"<h2>{section}</h2>" in page, section
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 3 and all(s.startswith("data:image/") for s in sources), "figures are inlined, nothing external"
    assert "accuracy <b>" in page and "red" in page


def test_report_shows_rank_and_compare_when_present(tiny_run, tmp_path):
    run, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "rank.json").write_text('{"score": "logme", "ranking": [{"model": "efficientnet_lite0", "logme": 1.5, "seconds": 2.0}]}')
    (copy / "compare.json").write_text('{"verdict": {"negative_transfer": true, "message": "NEGATIVE TRANSFER: scratch did as well"},'
                                       ' "fractions": {"1": {"train_size": 10, "transfer": {"test": 0.5}, "scratch": {"test": 0.6}}}}')
    page = render_report(copy).read_text()
    assert "Candidate backbones (ranked by logme)" in page and "efficientnet_lite0" in page
    assert 'class="warn">NEGATIVE TRANSFER' in page and "Transfer vs scratch" in page


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian package `chromium`; .ci/run installs it)")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    run, _ = tiny_run
    page = (run.path / "report.html").read_text()
    n_images = page.count("<img ")
    # Once loaded, the page records how many of its images decoded to a real size.
    probe = page.replace("</body>", "<script>window.onload=()=>document.body.setAttribute('data-decoded',"
                                    "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length)</script></body>")
    (tmp_path / "probe.html").write_text(probe)
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert f'data-decoded="{n_images}"' in dom, f"expected all {n_images} images decoded"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run(flags + ["--window-size=1200,2400", f"--screenshot={shot}", (run.path / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        colours = len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert colours > 50, "the screenshot shows figures, not a blank page"
