"""Several targets from one body (`--target a,b`): a head block per target, each solved, scored and predicted as its
own task would, side by side; and the commands that score one target say so."""
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import headstart as hs
from headstart.cli import main
from headstart.errors import UserError
from headstart.predict import format_rows
from headstart.tasks import MultiTask
from headstart.train.probe import fit_ridge_head

FAST = dict(epochs=20, patience=5, batch_size=32, num_workers=0, progress=False)


def make_table(path: Path, n: int = 300, seed: int = 0) -> Path:
    """price: a number from a and b; size: a class from c and d (independent of price); a row without price."""
    rng = np.random.default_rng(seed)
    a, b, c, d = rng.normal(size=n), rng.uniform(-2, 2, size=n), rng.normal(size=n), rng.choice(["u", "v"], size=n)
    price = 3 * a + b + rng.normal(0, 0.2, n)
    size = np.where(c + (d == "u") > 0.5, "big", "small")
    df = pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "price": price, "size": size})
    df.loc[5, "price"] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    data = make_table(root / "shop.csv")
    run = hs.fit(str(data), target="price,size", out=str(root / "run"), cache_dir=str(root / "cache"), **FAST)
    return run, data, root


def test_a_head_per_target_each_scored_as_its_task(two_targets):
    run, data, root = two_targets
    scores = run.metrics["targets"]
    assert set(scores) == {"price", "size"} and scores["price"]["r2"] > 0.9 and scores["size"]["accuracy"] > 0.8
    summary = json.loads((run.path / "data.json").read_text())
    assert summary["task"] == "multitask" and summary["classes"] == ["price", "size=big", "size=small"]
    assert summary["skipped"] == [{"where": f"{data} row 7", "reason": "missing target (price)"}]
    assert "a" in summary["columns"] and "price" not in summary["columns"] and "size" not in summary["columns"]
    with open(run.path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[1:] == ["price_true", "price_predicted", "size_true", "size_predicted", "size_confidence"]
    assert len(rows) == run.metrics["n"] and {r["size_predicted"] for r in rows} <= {"big", "small"}
    assert (run.path / "confusion_matrix_size.png").stat().st_size > 5000
    assert (run.path / "predicted_vs_true_price.png").stat().st_size > 5000
    report = (run.path / "report.html").read_text()
    assert "price: test R² <b>" in report and "size: test accuracy <b>" in report
    assert "Metrics per class of size" in report and 'alt="confusion matrix of size"' in report
    assert "<h2>Predicted against true</h2>" in report


def test_the_saved_model_predicts_every_target(two_targets, tmp_path):
    run, data, root = two_targets
    loaded = hs.load(run.path)
    assert loaded.model.task.name == "multitask"
    new = tmp_path / "new.csv"
    pd.read_csv(data).head(4).to_csv(new, index=False)  # target columns present: dropped, never read as features
    rows = loaded.predict([str(new)], progress=False)
    assert set(rows[0]["targets"]) == {"price", "size"}
    assert isinstance(rows[0]["targets"]["price"]["prediction"], float)
    assert rows[0]["targets"]["size"]["predictions"][0]["label"] in ("big", "small")
    without_targets = pd.read_csv(data).head(4).drop(columns=["price", "size"]).to_dict("records")
    assert loaded.predict_values(without_targets) == [r | {"input": f"row {i + 1}"} for i, r in enumerate(rows)]
    table = format_rows(rows, "csv").splitlines()
    assert table[0] == "input,price,size,size_probability" and len(table) == 5


def test_evaluate_reads_each_target_column(two_targets, tmp_path):
    run, data, root = two_targets
    frame = pd.read_csv(data).head(40)
    frame.loc[0, "size"] = "huge"  # not a class the model knows
    frame.to_csv(tmp_path / "labeled.csv", index=False)
    metrics = hs.load(run.path).evaluate(str(tmp_path / "labeled.csv"))
    assert metrics["n"] == 38 and set(metrics["targets"]) == {"price", "size"}
    assert [s["reason"] for s in metrics["skipped"]] == ["size: label 'huge' is not one of the classes (big, small)",
                                                         "missing target (price)"]
    assert Path(metrics["saved_to"], "confusion_matrix_size.png").is_file()
    assert Path(metrics["saved_to"], "predicted_vs_true_price.png").is_file()


def test_onnx_export_carries_every_block(two_targets):
    run, data, root = two_targets
    spec = hs.export(run.path)
    assert [t["columns"] for t in spec["output"]["targets"]] == [[0, 1], [1, 3]]
    rows = pd.read_csv(data).head(5).drop(columns=["price", "size"]).to_dict("records")
    eager = hs.load(run.path).predict_values(rows)
    onnx = hs.load(run.path).predict_values(rows, engine="onnx")
    for e, o in zip(eager, onnx):
        assert abs(e["targets"]["price"]["prediction"] - o["targets"]["price"]["prediction"]) < 1e-3
        assert e["targets"]["size"]["predictions"][0]["label"] == o["targets"]["size"]["predictions"][0]["label"]


def test_each_block_is_solved_as_its_own_head():
    """The regression block of a solved multi-task head is the ridge solution of that target alone."""
    torch.manual_seed(0)
    feats = torch.randn(80, 6, dtype=torch.float64)
    value = feats[:, 0] * 2 + 0.1 * torch.randn(80, dtype=torch.float64)
    label = (feats[:, 1] > 0).long()
    task = MultiTask({"targets": [{"name": "v", "task": "regression", "classes": []},
                                  {"name": "k", "task": "classification", "classes": ["no", "yes"]}]})
    task.fit_scale([[float(v), int(k)] for v, k in zip(value, label)])
    targets = task.targets([[float(v), int(k)] for v, k in zip(value, label)])
    layer = nn.Linear(6, task.n_outputs([])).double()
    task.solve_head(layer, feats, targets, seed=0)
    alone = nn.Linear(6, 1).double()
    fit_ridge_head(alone, feats, targets[:, 0])
    assert torch.allclose(layer.weight[:1], alone.weight) and torch.allclose(layer.bias[:1], alone.bias)
    probs = task.postprocess(layer(feats))
    assert probs.shape == (80, 3) and torch.allclose(probs[:, 1:].sum(1), torch.ones(80))
    assert (probs[:, 1:].argmax(1) == label).float().mean() > 0.9


def test_commands_and_options_that_read_one_target_refuse_several(two_targets, tmp_path, capsys):
    run, data, root = two_targets
    with pytest.raises(UserError, match="--balance weights applies to classification .* multi-task"):
        hs.fit(str(data), target="price,size", balance="weights", out=str(tmp_path / "b"), **FAST)
    with pytest.raises(UserError, match="setfit pairs examples by class"):
        hs.fit(str(data), target="price,size", strategy="setfit", out=str(tmp_path / "s"), **FAST)
    with pytest.raises(UserError, match="--task multilabel reads one column"):
        hs.fit(str(data), target="price,size", task="multilabel", out=str(tmp_path / "m"), **FAST)
    one_size = tmp_path / "one_size.csv"
    pd.read_csv(data).assign(size="big").to_csv(one_size, index=False)
    with pytest.raises(UserError, match="target 'size' has one class .*drop it from --target"):
        hs.fit(str(one_size), target="price,size", out=str(tmp_path / "o"), **FAST)
    with pytest.raises(UserError, match="no column 'colour' for --target"):
        hs.fit(str(data), target="price,colour", out=str(tmp_path / "c"), **FAST)
    with pytest.raises(UserError, match="rank scores one target, and --target names 2 .*--target price"):
        hs.rank(str(data), models=["mlp"], target="price,size", progress=False)
    assert main(["compare", str(data), "--target", "price,size", "--model", f"run:{run.path}", "--out",
                 str(tmp_path / "cmp")]) == 2
    assert "compare scores one target" in capsys.readouterr().err
    with pytest.raises(UserError, match="update handles classification and regression runs"):
        hs.update(str(run.path), str(data), out=str(tmp_path / "u"), **FAST)


def make_reviews(path: Path, n: int = 80, seed: int = 0) -> Path:
    """A topic (class) and a star rating (number, from the words of praise or blame) per text; one row unrated."""
    rng = np.random.default_rng(seed)
    topics = {"food": ["the soup", "the pasta", "dessert", "the bread"], "hotel": ["the room", "the bed", "reception", "the pool"]}
    moods = [(1.0, "was awful and cold"), (2.5, "was rather dull"), (4.0, "was quite nice"), (5.0, "was wonderful, truly superb")]
    rows = []
    for i in range(n):
        topic = ["food", "hotel"][i % 2]
        stars, words = moods[rng.integers(len(moods))]
        rows.append({"text": f"{rng.choice(topics[topic])} {words}", "topic": topic, "stars": stars + rng.normal(0, 0.1)})
    rows[3]["stars"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_text_file_with_several_label_columns(tmp_path):
    data = make_reviews(tmp_path / "reviews.csv")
    run = hs.fit(str(data), label_column="topic,stars", strategy="linear-probe", out=str(tmp_path / "run"),
                 cache_dir=str(tmp_path / "cache"), **FAST)
    summary = json.loads((run.path / "data.json").read_text())
    specs = summary["targets"]
    assert [(t["name"], t["task"], t["classes"]) for t in specs] == [("topic", "classification", ["food", "hotel"]),
                                                                      ("stars", "regression", [])]
    assert run.metrics["targets"]["topic"]["accuracy"] > 0.8 and run.metrics["targets"]["stars"]["r2"] > 0.3
    assert {"where": f"{data} row 5", "reason": "missing label (stars)"} in summary["skipped"]
    answer = hs.load(run.path).predict_values(["the pool was wonderful, truly superb"])[0]["targets"]
    assert answer["topic"]["predictions"][0]["label"] == "hotel" and answer["stars"]["prediction"] > 3
    metrics = hs.load(run.path).evaluate(str(data))
    assert metrics["n"] == 79 and set(metrics["targets"]) == {"topic", "stars"}


def test_an_image_manifest_with_several_label_columns(tmp_path):
    """Colour (class, from the folder) and brightness (a number the squares are scaled by) of each image."""
    from conftest import make_images
    from PIL import Image

    folder = make_images(tmp_path / "squares", per_class=12)
    rows = []
    for i, path in enumerate(sorted(folder.rglob("*.png"))):
        brightness = 0.3 + 0.7 * (i % 7) / 6
        Image.fromarray((np.asarray(Image.open(path)) * brightness).astype(np.uint8)).save(path)
        rows.append({"path": str(path.relative_to(tmp_path)), "colour": path.parent.name, "brightness": brightness})
    rows[0]["colour"] = ""  # unlabeled in one column: skipped
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    run = hs.fit(str(tmp_path / "manifest.csv"), label_column="colour,brightness", strategy="linear-probe", image_size=64,
                 out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), **FAST)
    assert run.metrics["targets"]["colour"]["accuracy"] > 0.8 and run.metrics["targets"]["brightness"]["r2"] > 0.5
    assert json.loads((run.path / "data.json").read_text())["skipped"] == [
        {"where": f"{tmp_path / 'manifest.csv'} row 2", "reason": "missing target (colour)"}]
    metrics = hs.load(run.path).evaluate(str(tmp_path / "manifest.csv"))
    assert metrics["n"] == 35 and set(metrics["targets"]) == {"colour", "brightness"}
    with pytest.raises(UserError, match="several label columns are read from a CSV manifest"):
        hs.fit(str(folder), label_column="colour,brightness", out=str(tmp_path / "folders"), **FAST)


def test_the_cli_fits_and_predicts_several_targets(tmp_path, capsys):
    data = make_table(tmp_path / "shop.csv", n=120)
    out = tmp_path / "run"
    assert main(["fit", str(data), "--target", "price,size", "--out", str(out), "--epochs", "5", "--no-progress"]) == 0
    assert "multi-task: price (regression), size (2 classes)" in capsys.readouterr().out
    assert main(["predict", str(out), str(data), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "input,price,size,size_probability"
