"""fit --adapt-to: the head aligned to unlabeled inputs of another domain (headstart/adaptation.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart as hs
from headstart.adaptation import MIN_TARGET_INPUTS, alignment, domain_gap, fold_into_head
from headstart.cli import build_parser
from headstart.errors import UserError
from headstart.heads import build_head


def digit_images(folder: Path, indices, shift=None) -> Path:
    """scikit-learn's digits as class folders of PNGs (dark ink on white), optionally shifted."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in indices:
        path = folder / str(digits.target[i]) / f"digit_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((255 - digits.images[i] * 255 / 16).astype(np.uint8), mode="L").convert("RGB")
        (shift(image) if shift else image).save(path)
    return folder


def faded(image):
    """A pale scan: grey paper, grey ink (contrast 0.3 about a light grey)."""
    return Image.eval(image, lambda v: int(100 + 0.3 * v))


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Digits 0-2: 15 labeled clear scans per class (source), and 15 unlabeled faded scans per class of other digits
    (target). A head that never saw a faded scan reads them near chance."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(0)
    picked = {c: rng.permutation(np.flatnonzero(labels == c))[:30] for c in range(3)}
    root = tmp_path_factory.mktemp("adaptation")
    source = digit_images(root / "source", [i for c in picked for i in picked[c][:15]])
    target = digit_images(root / "target", [i for c in picked for i in picked[c][15:]], faded)
    options = dict(strategy="linear-probe", image_size=64, seed=0, progress=False, cache_dir=str(root / "cache"))
    plain = hs.fit(str(source), out=str(root / "plain"), **options)
    adapted = hs.fit(str(source), out=str(root / "adapted"), adapt_to=str(target), **options)
    return plain, adapted, target


def test_the_adapted_model_reads_the_shifted_domain_that_the_plain_one_misreads(shifted):
    plain, adapted, target = shifted
    before, after = plain.evaluate(str(target))["accuracy"], adapted.evaluate(str(target))["accuracy"]
    # the shift is real: 0.69 here against 0.86 on clear scans held out of the source (chance: 0.33); adapted, 0.82
    assert before <= 0.75
    assert after >= before + 0.08


def test_the_run_records_the_adaptation_and_saves_the_aligned_head(shifted):
    plain, adapted, target = shifted
    note = adapted.metrics["adaptation"]
    assert note["target_inputs"] == 45 and note["skipped"] == 0 and note["inputs"] == [str(target)]
    assert note["domain_gap"]["before"] > note["domain_gap"]["after"]
    assert set(note["target_class_shares"]["after"]) == {"0", "1", "2"}
    assert 0 < note["target_predictions_changed"] <= 1 and "accuracy" in note["before"]
    assert "adapt_to:" in (adapted.path / "config.yaml").read_text()
    files = sorted(str(p) for p in target.rglob("*.png"))
    reloaded = hs.load(adapted.path)  # the alignment lives in the saved head's weights
    np.testing.assert_allclose(reloaded.predict_outputs(files), adapted.predict_outputs(files), atol=1e-5)
    assert not np.allclose(plain.predict_outputs(files), adapted.predict_outputs(files), atol=1e-3)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_the_alignment_folds_into_the_head(head):
    torch.manual_seed(0)
    source, target = torch.randn(200, 16) * 2 + 1, torch.randn(150, 16) * 0.5 - 3
    scale, shift = alignment(source, target)
    aligned = target * scale + shift
    torch.testing.assert_close(aligned.mean(0), source.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(aligned.std(0), source.std(0), atol=1e-4, rtol=1e-4)
    net = build_head(head, 16, 3).eval()
    expected = net(aligned)
    fold_into_head(net, scale, shift)
    torch.testing.assert_close(net(target), expected, atol=1e-4, rtol=1e-4)


def test_the_domain_gap_tells_shifted_features_from_a_second_draw():
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.normal(size=(200, 32))), torch.tensor(rng.normal(size=(200, 32)))
    assert domain_gap(a, b) < 0.4
    assert domain_gap(a, b + 2.0) > 1.5


def test_too_few_target_inputs_is_one_clear_error(tmp_path, tiny_images):
    few = digit_images(tmp_path / "few", range(MIN_TARGET_INPUTS - 1))
    with pytest.raises(UserError, match=rf"--adapt-to .*few: {MIN_TARGET_INPUTS - 1} readable input"):
        hs.fit(str(tiny_images), strategy="linear-probe", image_size=32, adapt_to=str(few), out=str(tmp_path / "run"),
               progress=False)
    assert not (tmp_path / "run").exists(), "refused before training: no half-written run to --force over"


def test_the_cli_takes_several_target_folders():
    args = build_parser().parse_args(["fit", "DATA", "--adapt-to", "a", "--adapt-to", "b"])
    assert args.adapt_to == ["a", "b"]
    assert build_parser().parse_args(["fit", "DATA"]).adapt_to is None


@pytest.mark.parametrize("command", ["rank", "compare", "lr-find"])
def test_commands_that_save_no_model_refuse_it(command, tmp_path):
    given = [command, "DATA"] + (["--models", "m"] if command == "rank" else [])
    assert build_parser().parse_args(given).command == command
    with pytest.raises(SystemExit):  # not an option of theirs: argparse refuses it, exit 2
        build_parser().parse_args(given + ["--adapt-to", "a"])
    api = {"rank": lambda: hs.rank(str(tmp_path), ["efficientnet_lite0"], adapt_to="a"),
           "compare": lambda: hs.compare(str(tmp_path), adapt_to="a"),
           "lr-find": lambda: hs.lr_find(str(tmp_path), adapt_to="a")}[command]
    with pytest.raises(UserError, match=f"{command} judges the labeled data and saves no model, so adapt_to does not apply"):
        api()


def test_an_update_does_not_carry_the_runs_target_but_takes_one(shifted, tmp_path):
    from headstart.updating import carried_config

    plain, adapted, target = shifted
    assert carried_config(adapted, tmp_path, tmp_path / "out", "l2-sp", {}).adapt_to is None
    more = digit_images(tmp_path / "more", range(60, 90))  # more clear scans of every digit, 0-2 among them
    updated = hs.update(plain, str(more), out=str(tmp_path / "updated"), adapt_to=str(target), strategy="linear-probe",
                        progress=False)
    assert updated.metrics["adaptation"]["target_inputs"] == 45
