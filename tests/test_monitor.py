"""`headstart monitor`: a fit keeps a reference of its held-out rows; new inputs are tested against it for drift."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import headstart as hs
from headstart.cli import main
from headstart.drift import REFERENCE_FILE, load_reference, verdict
from headstart.errors import UserError

from conftest import COLORS, make_images
from test_tabular import FAST as TABLE_FAST, make_table


def make_dark_images(folder: Path, per_class: int = 15) -> Path:
    """The same colours at under half the brightness: a covariate shift the classes survive."""
    rng = np.random.default_rng(1)
    for name, colour in COLORS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) * 0.45 + rng.normal(0, 35, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / name / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    run = hs.fit(str(make_images(root / "train", per_class=40)), strategy="linear-probe", out=str(root / "run"),
                 image_size=64, cache_dir=str(root / "cache"), progress=False)
    return run, root


def test_a_fit_keeps_its_held_out_rows_as_its_reference(colours):
    run, _ = colours
    reference = load_reference(run.path / "model")
    sizes = json.loads((run.path / "data.json").read_text())["sizes"]
    assert reference["split"] == "test + val" and len(reference["features"]) == sizes["test"] + sizes["val"]
    assert reference["features"].shape[1] == run.model.backbone.feature_dim
    with open(run.path / "predictions.csv") as f:  # the test rows come first, as the fit scored them
        confidence = [float(r["confidence"]) for r in csv.DictReader(f)]
    assert reference["outputs"][:sizes["test"]].max(1).values.tolist() == pytest.approx(confidence, abs=1e-5)


def test_inputs_like_the_training_data_show_no_drift(colours):
    run, root = colours
    report = run.monitor(str(make_images(root / "same", per_class=15, seed=7)), progress=False)
    assert not report["drift"] and report["new_rows"] == 45
    assert set(report["tests"]) == {"features", "outputs", "predicted classes"}


def test_darker_images_and_a_single_class_are_drift(colours):
    run, root = colours
    dark = run.monitor(str(make_dark_images(root / "dark")), progress=False)
    assert dark["drift"] and dark["tests"]["features"]["p"] < 0.05 and dark["tests"]["outputs"]["p"] < 0.05
    only_red = root / "only_red"
    shutil.copytree(make_images(root / "same_red", classes=("red",), per_class=15, seed=9) / "red", only_red)
    label_shift = run.monitor(str(only_red), progress=False)
    assert label_shift["drift"] and label_shift["tests"]["predicted classes"]["p"] < 0.05
    assert label_shift["predicted_share"]["red"]["new"] == 1.0


def test_inputs_unlike_any_reference_input_are_named(colours, tmp_path):
    run, root = colours
    rng = np.random.default_rng(2)
    mixed = make_images(tmp_path / "mixed", classes=("green",), per_class=10, seed=11)
    for i in range(3):  # black-and-white checkerboards: nothing like a noisy colour square
        Image.fromarray((rng.integers(0, 2, (32, 32, 1)) * 255).repeat(3, 2).astype(np.uint8)).save(mixed / f"odd{i}.png")
    report = run.monitor(str(mixed), progress=False)
    named = [Path(r["input"]).name for r in report["unlike_reference"]]  # the most distant first
    assert set(named[:3]) == {"odd0.png", "odd1.png", "odd2.png"}
    assert len(named) < 6  # few of the ten green squares, if any, pass the reference's own 99th percentile


def test_cli_writes_the_check_and_fails_on_drift_when_asked(colours, capsys):
    run, root = colours
    out = root / "check"
    status = main(["monitor", str(run.path), str(make_dark_images(root / "dark_cli")), "--out", str(out), "--fail-on-drift"])
    assert status == 1 and "DRIFT" in capsys.readouterr().out
    assert {"monitor.json", "inputs.csv", "drift.png"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "monitor.json").read_text())
    assert saved["drift"] and saved["reference_rows"] == len(load_reference(run.path / "model")["features"])
    with open(out / "inputs.csv") as f:
        assert len(list(csv.DictReader(f))) == 45
    assert main(["monitor", str(run.path), str(root / "same"), "--fail-on-drift", "--out", str(root / "check2")]) == 0
    with pytest.raises(UserError, match="check2 already holds files; give a new --out"):  # the earlier verdict is kept
        run.monitor(str(root / "dark_cli"), out=root / "check2", progress=False)
    assert not json.loads((root / "check2" / "monitor.json").read_text())["drift"]


def test_a_reference_of_a_few_rows_names_no_input_unlike_it(colours):
    run, root = colours
    few = make_images(root / "few_reference", per_class=2, seed=12)  # six rows: their neighbours' distances are noise
    report = run.monitor(str(root / "same"), reference=str(few), out=root / "few_check", progress=False)
    assert report["unlike_reference"] == [] and report["novel_rows"] is None and report["novel_threshold"] is None
    assert "too few reference rows to name inputs unlike them" in verdict(report)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    saved = json.loads((root / "few_check" / "monitor.json").read_text(), parse_constant=refuse)  # no Infinity
    assert saved["novel_threshold"] is None
    with open(root / "few_check" / "inputs.csv") as f:
        assert {row["unlike_reference"] for row in csv.DictReader(f)} == {""}, "not 0: nobody could tell"


def test_a_run_without_a_reference_asks_for_one(colours, tmp_path):
    run, root = colours
    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    (old / "model" / REFERENCE_FILE).unlink()
    with pytest.raises(UserError, match="--reference"):
        hs.monitor(old, str(root / "dark"))
    report = hs.monitor(old, str(root / "dark"), reference=str(root / "same"))
    assert report["drift"] and report["reference_rows"] == 45 and report["reference_split"].startswith("given")


def test_a_shifted_table_column_is_drift_in_a_regression(tmp_path):
    table = pd.read_csv(make_table(tmp_path / "all.csv", n=500)).drop(columns=["label"])
    table[:350].to_csv(tmp_path / "t.csv", index=False)  # fitted on; the rest arrives later, from the same source
    later = table[350:].drop(columns=["y"])
    later.to_csv(tmp_path / "same.csv", index=False)
    later.assign(a=later["a"] + 2.5).to_csv(tmp_path / "shifted.csv", index=False)  # the strongest input, +2.5 sd
    run = hs.fit(str(tmp_path / "t.csv"), target="y", strategy="finetune", out=str(tmp_path / "run"),
                 **{**TABLE_FAST, "epochs": 3})
    assert not run.monitor(str(tmp_path / "same.csv"), progress=False)["drift"]
    moved = run.monitor(str(tmp_path / "shifted.csv"), progress=False)
    assert moved["drift"] and moved["tests"]["outputs"]["most_shifted"] == "prediction"
    assert "predicted classes" not in moved["tests"]
