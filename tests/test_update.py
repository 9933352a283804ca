"""`headstart update`: new data and new classes from a run's model, its old rows rehearsed, forgetting measured."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import headstart as hs
from headstart.cli import main
from headstart.drift import load_reference
from headstart.errors import UserError

from conftest import make_images
from test_tabular import FAST as TABLE_FAST, make_table


def make_colour(folder: Path, name: str, rgb: tuple, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.clip(np.array(rgb) + rng.normal(0, 35, (32, 32, 3)), 0, 255).astype(np.uint8)).save(
            folder / name / f"{name}_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    data = make_images(root / "old", per_class=20)
    run = hs.fit(str(data), strategy="linear-probe", out=str(root / "run"), image_size=64, progress=False)
    new = make_colour(make_images(root / "new", classes=("red",), per_class=15, seed=4), "yellow", (210, 200, 30), 20, 5)
    return run, root, data, new


def test_a_new_class_is_learned_and_the_old_ones_are_kept(old_run):
    run, root, _, new = old_run
    updated = hs.update(run, str(new), out=str(root / "updated"), epochs=1, progress=False)
    assert updated.classes == ["blue", "green", "red", "yellow"]  # the run's order first: its head rows keep their meaning
    report = updated.metrics["update"]
    old_sizes = json.loads((run.path / "data.json").read_text())["sizes"]
    assert report["classes_added"] == ["yellow"] and report["replayed"] == old_sizes["train"]  # every old training row
    assert report["old"]["n"] == run.metrics["n"] and report["old"]["before"] == run.metrics["accuracy"]
    assert report["old"]["after"] >= report["old"]["before"] - 0.1
    assert report["new"]["before"] < 0.8 < report["new"]["after"]  # the run could not name a yellow square
    assert yaml.safe_load((updated.path / "config.yaml").read_text())["image_size"] == 64  # the run's recipe carried
    assert "old test" in (updated.path / "report.html").read_text()
    assert updated.predict([str(next((new / "yellow").iterdir()))])[0]["predictions"][0]["label"] == "yellow"


def test_new_data_of_one_new_class_alone_is_learned(old_run):
    run, root, _, _ = old_run
    only = make_colour(root / "only-yellow", "yellow", (210, 200, 30), 20, 6)
    updated = hs.update(run, str(only), out=str(root / "only-yellow-run"), epochs=1, progress=False)
    assert updated.classes == ["blue", "green", "red", "yellow"]
    assert updated.metrics["update"]["new"]["after"] > 0.8


def test_cli_replays_a_sample_and_refuses_a_model(old_run, capsys):
    run, root, _, new = old_run
    assert main(["update", str(run.path), str(new), "--out", str(root / "cli"), "--replay", "10", "--epochs", "1",
                 "--no-progress"]) == 0
    assert "10 old ones replayed" in capsys.readouterr().out
    assert json.loads((root / "cli" / "metrics.json").read_text())["update"]["replayed"] == 10
    assert main(["update", str(run.path), str(new), "--model", "efficientnet_lite1"]) == 2
    assert "--model does not apply" in capsys.readouterr().err


def _named(run, folder: Path) -> float:
    """Share of the images in folder/<class>/ that `run` names as their class."""
    files = [(str(f), c.name) for c in sorted(folder.iterdir()) for f in sorted(c.iterdir())]
    predicted = [p["predictions"][0]["label"] for p in run.predict([f for f, _ in files])]
    return float(np.mean([p == c for p, (_, c) in zip(predicted, files)]))


def test_without_the_old_data_its_reference_features_stand_in(old_run, tmp_path, capsys):
    run, root, data, new = old_run
    moved = tmp_path / "run"
    shutil.copytree(run.path, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    (moved / "config.yaml").write_text(yaml.safe_dump({**config, "data": str(tmp_path / "gone")}))
    updated = hs.update(moved, str(new), out=str(tmp_path / "u"), epochs=1, progress=False)
    report = updated.metrics["update"]
    reference = load_reference(moved / "model")
    assert report["replayed"] == 0 and "old" not in report
    assert report["replayed_features"]["rows"] == len(reference["labels"]) > 0
    assert report["replayed_features"]["strategy"] == "linear-probe" and updated.metrics["stages"]["head"]["replayed_rows"] > 0
    said = capsys.readouterr().out
    assert "forgetting not measured" in said and "the old ones are forgotten" not in said
    blue_green = tmp_path / "blue_green"
    for c in ("blue", "green"):  # old classes absent from the new data
        shutil.copytree(data / c, blue_green / c)
    assert _named(updated, blue_green) >= 0.9  # the head still names them: their features were replayed
    assert _named(updated, new) >= 0.9
    kept = load_reference(updated.path / "model")  # the next update without data replays blue and green too
    assert {updated.classes.index("blue"), updated.classes.index("green")} <= set(kept["labels"].tolist())
    assert kept["outputs"].shape[1] == len(updated.classes)

    forgot = hs.update(moved, str(new), out=str(tmp_path / "l2sp"), strategy="l2-sp", epochs=1, progress=False)
    assert "replayed_features" not in forgot.metrics["update"]  # a body that trains cannot reuse the run's features
    assert "leave --strategy out: the run's reference is then replayed" in capsys.readouterr().out
    assert _named(forgot, blue_green) < 0.2  # nothing asked its head to name them

    again = hs.update(moved, str(new), out=str(tmp_path / "u2"), old_data=str(data), epochs=1, progress=False)
    assert again.metrics["update"]["old"]["n"] == run.metrics["n"] and "replayed_features" not in again.metrics["update"]
    with pytest.raises(UserError, match="does not exist"):
        hs.update(moved, str(new), out=str(tmp_path / "u3"), old_data=str(tmp_path / "nowhere"))


def test_replay_0_replays_the_reference_and_keeps_its_rows_out_of_the_splits(old_run):
    run, root, _, new = old_run
    updated = hs.update(run, str(new), out=str(root / "replay0"), replay=0, progress=False)
    report = updated.metrics["update"]
    assert report["replayed"] == 0 and report["replayed_features"]["rows"] > 0
    assert "seen" in report["old"]  # the old test rows it is scored on are the reference's: said, not hidden
    sizes = json.loads((updated.path / "data.json").read_text())["sizes"]
    alone = hs.update(run, str(new), out=str(root / "new-only"), replay=0, strategy="l2-sp", epochs=1, progress=False)
    alone_sizes = json.loads((alone.path / "data.json").read_text())["sizes"]
    assert sizes["test"] + sizes["val"] < alone_sizes["test"] + alone_sizes["val"]  # the old held-out rows are left out


def test_a_regression_run_is_updated_on_shifted_rows(tmp_path):
    table = pd.read_csv(make_table(tmp_path / "all.csv", n=400)).drop(columns=["label"])
    table[:250].to_csv(tmp_path / "old.csv", index=False)
    later = table[250:].copy()
    later["y"] += 1.5  # the world moved: the same inputs now mean a larger target
    later.to_csv(tmp_path / "new.csv", index=False)
    run = hs.fit(str(tmp_path / "old.csv"), target="y", strategy="finetune", out=str(tmp_path / "run"), **TABLE_FAST)
    updated = hs.update(run, str(tmp_path / "new.csv"), out=str(tmp_path / "updated"), strategy="finetune", epochs=20,
                        progress=False)
    report = updated.metrics["update"]
    assert report["new"]["after"] > report["new"]["before"] and report["old"]["n"] > 0
    replayed = hs.update(run, str(tmp_path / "new.csv"), out=str(tmp_path / "replayed"), replay=0, progress=False)
    report = replayed.metrics["update"]  # the reference's rows and values replayed to a ridge head, body kept
    assert report["replayed_features"]["rows"] > 0 and report["replayed_features"]["balance"] is None  # no classes
    kept = load_reference(replayed.path / "model")
    assert kept["outputs"].shape == (len(kept["labels"]), 1) and len(kept["labels"]) > report["replayed_features"]["rows"]


def test_the_old_validation_rows_judge_the_heads_only_where_the_run_never_learned_them():
    """A run refit on train + val learned its validation rows: among the update's, its own head beat the new solve on
    them, and the update kept the old model (the sweep's table: the new data learned nothing)."""
    from types import SimpleNamespace

    from headstart.data.base import LabeledData
    from headstart.updating import _merged

    def data(tag):
        return LabeledData("tabular", "regression", ["y"], [(f"{tag} train", 1.0)], [(f"{tag} val", 2.0)],
                           [(f"{tag} test", 3.0)], "table", [], {})

    for metrics, old_val in (({}, ["old val"]), ({"refit": {"reason": "few rows"}}, [])):
        run = SimpleNamespace(model=SimpleNamespace(task=SimpleNamespace(name="regression")), classes=["y"],
                              metrics=metrics, path=Path("run"))
        merged = _merged(data("new"), data("old"), None, 0, run)
        assert [x for x, _ in merged.val] == ["new val", *old_val]
        assert [x for x, _ in merged.train] == ["new train", "old train"] and len(merged.test) == 2


def test_a_table_run_whose_body_never_trained_is_updated_as_untrained(tmp_path):
    """A linear-probe run of the mlp body left it random: reused as trained, its random features joined the solve and
    L2-SP pulled towards random weights (a Carseats update lost 0.02 R² on more rows); auto's rule for an untrained
    body decides instead, and the reused body is untrained to the new fit."""
    from headstart.backbones import create_backbone

    table = pd.read_csv(make_table(tmp_path / "all.csv", n=300)).drop(columns=["label"])
    table[:150].to_csv(tmp_path / "old.csv", index=False)
    table[150:].to_csv(tmp_path / "new.csv", index=False)
    run = hs.fit(str(tmp_path / "old.csv"), target="y", strategy="linear-probe", out=str(tmp_path / "run"), **TABLE_FAST)
    assert not create_backbone(f"run:{run.path}").pretrained
    trained = hs.fit(str(tmp_path / "old.csv"), target="y", strategy="finetune", out=str(tmp_path / "ft"), **TABLE_FAST)
    assert create_backbone(f"run:{trained.path}").pretrained, "a body its run trained is reused as trained"
    updated = hs.update(run, str(tmp_path / "new.csv"), out=str(tmp_path / "updated"), progress=False)
    assert yaml.safe_load((updated.path / "config.yaml").read_text())["strategy"] == "auto"
    assert updated.metrics["stages"]["auto"]["picked"] in ("linear-probe", "two-stage")
    assert updated.metrics["update"]["old"]["after"] >= updated.metrics["update"]["old"]["before"] - 0.01
