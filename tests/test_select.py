"""Transferability scores (LogME against its closed form and invariances; kNN/probe on separable vs random labels) and rank."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy.stats import multivariate_normal

import headstart as hs
from headstart.errors import UserError
from headstart.select.scores import knn_accuracy, knn_r2, logme, logme_details, probe_accuracy, probe_r2


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 80)
    return rng.normal(size=(80, 6)) + 1.5 * np.eye(6)[y], y  # features that carry the labels: finite alpha


def test_logme_is_the_bayesian_evidence_at_its_maximum(features):
    f, y = features
    det = logme_details(f, y)
    onehot = (y[:, None] == np.arange(3)[None]).astype(float)

    def log_evidence(c, alpha, beta):  # y ~ N(0, I/beta + F F^T/alpha): the closed-form marginal likelihood
        cov = np.eye(len(f)) / beta + f @ f.T / alpha
        return multivariate_normal(np.zeros(len(f)), cov).logpdf(onehot[:, c]) / len(f)

    for c in range(3):
        a, b = det["alpha"][c], det["beta"][c]
        assert det["evidence"][c] == pytest.approx(log_evidence(c, a, b), abs=1e-9)
        for da, db in ((1.3, 1), (0.7, 1), (1, 1.3), (1, 0.7)):  # a fixed point of the evidence: a maximum
            assert log_evidence(c, a * da, b * db) < det["evidence"][c]


def test_logme_invariances(features):
    f, y = features
    base = logme(f, y)
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(y))
    q, _ = np.linalg.qr(rng.normal(size=(f.shape[1], f.shape[1])))
    relabel = np.array([2, 0, 1])[y]
    assert logme(f[perm], y[perm]) == pytest.approx(base, abs=1e-9)  # order of samples
    assert logme(f @ q, y) == pytest.approx(base, abs=1e-9)  # rotation of the feature space (isotropic prior)
    assert logme(f, relabel) == pytest.approx(base, abs=1e-9)  # names of the classes


def test_scores_prefer_features_that_carry_the_labels():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 30)
    informative = rng.normal(size=(120, 8)) + 3.0 * np.eye(8)[y]
    noise = rng.normal(size=(120, 8))
    assert logme(informative, y) > logme(noise, y)
    assert knn_accuracy(informative, y) > 0.9 and knn_accuracy(noise, y) < 0.5
    assert probe_accuracy(informative, y) > 0.9 and probe_accuracy(noise, y) < 0.5
    assert logme(informative[:, :1] @ np.ones((1, 8)), rng.normal(size=120), regression=True) < logme(
        informative, informative[:, 0] * 2 + 0.1 * rng.normal(size=120), regression=True)


def test_rank_bundled_backbones_and_fit_best(tiny_images, tmp_path):
    out = tmp_path / "rank"
    rows = hs.rank(str(tiny_images), ["efficientnet_lite0", "efficientnet_lite1"], score="knn", out=str(out),
                   image_size=64, progress=False, cache_dir=str(tmp_path / "cache"), fit_best=True, strategy="linear-probe")
    assert [r["model"] for r in rows] == sorted([r["model"] for r in rows], key=lambda m: -next(r["knn"] for r in rows if r["model"] == m))
    assert {r["model"] for r in rows} == {"efficientnet_lite0", "efficientnet_lite1"}
    assert all(0 <= r["knn"] <= 1 and 0 <= r["probe"] <= 1 and np.isfinite(r["logme"]) for r in rows)
    saved = json.loads((out / "rank.json").read_text())
    assert saved["ranking"][0]["model"] == rows[0]["model"]
    assert hs.load(out / "fit").model.backbone.name == rows[0]["model"]  # --fit-best fitted the winner
    again = hs.rank(str(tiny_images), ["efficientnet_lite0"], out=str(tmp_path / "rank2"), image_size=64, progress=False,
                    cache_dir=str(tmp_path / "cache"))
    assert again[0]["features_computed"] == 0, "rank reuses the feature cache"
    assert "caution" not in saved, "12 images per class (train + val): enough to rank"


def test_rank_on_too_few_examples_says_its_scores_are_noise(tmp_path, capsys):
    from conftest import make_images

    few = make_images(tmp_path / "few", per_class=3)
    hs.rank(str(few), ["efficientnet_lite0"], out=str(tmp_path / "rank"), image_size=32, progress=False)
    assert "caution: 2 example(s) in the smallest class: too few" in capsys.readouterr().out
    assert "label more" in json.loads((tmp_path / "rank" / "rank.json").read_text())["caution"]


def test_regression_scores_prefer_features_that_carry_the_target():
    rng = np.random.default_rng(3)
    informative = rng.normal(size=(80, 6))
    target = informative[:, 0] * 2 + 0.1 * rng.normal(size=80)
    noise = rng.normal(size=(80, 6))
    assert knn_r2(informative, target) > 0.3 and knn_r2(noise, target) < 0.1
    assert probe_r2(informative, target) > 0.9 and probe_r2(noise, target) < 0.1


def test_rank_honours_the_task(tiny_images, tmp_path):
    files = sorted(tiny_images.rglob("*.png"))
    values = {"red": 1.0, "green": 2.0, "blue": 3.0}
    (tmp_path / "values.csv").write_text("path,label\n" + "".join(
        f"{f},{values[f.parent.name] + 0.01 * i:.2f}\n" for i, f in enumerate(files)))
    options = dict(image_size=64, progress=False, cache_dir=str(tmp_path / "cache"))
    rows = hs.rank(str(tmp_path / "values.csv"), ["efficientnet_lite0"], score="probe", task="regression",
                   out=str(tmp_path / "rank"), **options)
    assert json.loads((tmp_path / "rank" / "rank.json").read_text())["task"] == "regression"
    assert rows[0]["knn"] > 0.5 and rows[0]["probe"] > 0.5 and np.isfinite(rows[0]["logme"]), rows  # R², colour -> value
    (tmp_path / "tags.csv").write_text("path,label\n" + "".join(f"{f},{f.parent.name};colour\n" for f in files))
    with pytest.raises(UserError, match="rank scores classification and regression data, and this reads as multi-label"):
        hs.rank(str(tmp_path / "tags.csv"), ["efficientnet_lite0"], out=str(tmp_path / "rank_ml"), **options)


def test_rank_cli_errors_are_one_line(tiny_images, tmp_path):
    cmd = [sys.executable, "-m", "headstart.cli", "rank", str(tiny_images), "--models", "nope_net", "--out", str(tmp_path / "r"),
           "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown backbone 'nope_net'" in result.stderr and "Traceback" not in result.stderr


def test_verdict_flags_negative_transfer_when_a_rival_beats_transfer_and_no_gain_when_one_ties():
    from headstart.select.compare import _verdict

    row = {"transfer": {"test": 0.9}, "scratch": {"test": 0.5}, "baseline": {"name": "raw pixels", "test": 0.8}}
    assert not _verdict(row, "m")["negative_transfer"]
    row["baseline"]["test"] = 0.9  # level: no help, but no harm (1.000 = 1.000 on 5 rows was called negative)
    tie = _verdict(row, "m")
    assert not tie["negative_transfer"] and tie["no_gain"] and tie["message"].startswith("NO GAIN FROM TRANSFER: raw pixels")
    row["baseline"]["test"] = 0.92
    verdict = _verdict(row, "m")
    assert verdict["negative_transfer"] and "raw pixels did better" in verdict["message"] and "rank" in verdict["message"]
    assert "instead of a probe" not in verdict["message"], "two-stage already fine-tunes"
    assert "instead of a probe" in _verdict(row, "m", "linear-probe")["message"]
    row["baseline"]["test"], row["scratch"]["test"] = 0.1, 0.95
    assert "scratch" in _verdict(row, "m")["message"]


def test_compare_transfer_scratch_baseline(tiny_images, tmp_path, capsys):
    out = tmp_path / "cmp"
    result = hs.compare(str(tiny_images), fractions="0.01,0.02,0.5,1", out=str(out), image_size=64, epochs=2,
                        batch_size=16, progress=False, cache_dir=str(tmp_path / "cache"))
    assert list(result["fractions"]) == ["0.01", "0.5", "1"], "0.02 of 26 images: the rows of 0.01 again, not refitted"
    assert "fraction 0.02 draws as many training rows (3) as fraction 0.01: not fitted again" in capsys.readouterr().out
    full, half = result["fractions"]["1"], result["fractions"]["0.5"]
    assert half["train_size"] < full["train_size"]
    for arm in ("transfer", "scratch"):
        assert {"start", "slope", "asymptote", "test", "curve"} <= set(full[arm])
        assert full[arm]["asymptote"] == max(full[arm]["curve"])
    assert len(full["scratch"]["curve"]) == 2, "scratch trains for the same budget, not stopped early"
    assert full["transfer"]["test"] > full["scratch"]["test"], "ImageNet features beat a random body on 26 images"
    assert full["baseline"]["name"].startswith("logistic regression on raw pixels")
    assert (out / "compare.json").is_file() and (out / "compare.png").stat().st_size > 10_000
    configs = {arm: yaml.safe_load((out / "train-1" / arm / "config.yaml").read_text()) for arm in ("transfer", "scratch")}
    views = configs["transfer"]["resolved"].get("augmentation")  # none where auto picked a probe: nothing fine-tuned
    if views:
        assert (configs["scratch"]["flip"], configs["scratch"]["crop_scale"]) == ("on" if views["flip"] else "off",
                                                                              views["min_scale"])
    else:
        note = hs.load(out / "train-1" / "scratch").metrics["stages"]["augment"]["summary"]
        assert "an untrained body's features cannot judge views" in note, "random features are not asked to judge"
    scratch_model = hs.load(out / "train-1" / "scratch").model
    transfer_model = hs.load(out / "train-1" / "transfer").model
    first = lambda m: next(p for n, p in m.backbone.named_parameters() if n.endswith("conv_stem.weight"))  # noqa: E731
    assert (first(scratch_model) - first(transfer_model)).abs().max() > 0.1, "scratch did not start from the pre-trained weights"


def test_compare_without_a_test_split_says_how_to_get_one(tmp_path):
    from conftest import make_images

    make_images(tmp_path / "d" / "train", per_class=4)
    make_images(tmp_path / "d" / "val", per_class=2)
    with pytest.raises(UserError, match="there is none; add a test/ folder"):
        hs.compare(str(tmp_path / "d"), out=str(tmp_path / "cmp"), progress=False)


def test_compare_table_names_the_curves_validation_score_apart_from_the_test_score():
    from headstart.select.compare import format_compare

    arm = {"test": 0.8, "start": 1.2, "slope": -0.1, "asymptote": 0.9}
    results = {"model": "mlp", "strategy": "auto", "score": "r2", "verdict": {"message": "ok"},
               "fractions": {"1.0": {"train_size": 10, "transfer": arm, "scratch": arm}}}
    header = format_compare(results).splitlines()[:2]
    assert "val MAE, lower is better" in header[0] and "transfer (test r2)" in header[1]
    assert "val accuracy curve" in format_compare({**results, "score": "accuracy"})


def test_compare_gives_scratch_the_views_transfer_kept(tmp_path):
    """The scratch arm trains on the crops and flips the transfer arm's check chose; an option the user gave stays."""
    from types import SimpleNamespace

    from headstart.select.compare import _augmentation_of

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"resolved": {"augmentation": {"flip": False, "min_scale": 0.8}}}))
    run = SimpleNamespace(path=tmp_path)
    assert _augmentation_of(run, {}) == {"flip": "off", "crop_scale": 0.8}
    assert _augmentation_of(run, {"flip": "on", "crop_scale": "auto"}) == {"crop_scale": 0.8}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"resolved": {}}))  # a table, or a probe: no views chosen
    assert _augmentation_of(run, {}) == {}
