"""Multi-label and regression heads on a manifest, and class-imbalance handling (--balance)."""
import csv
import io

import numpy as np
import pytest
import torch

import headstart as hs
from headstart.errors import UserError
from headstart.predict import format_rows
from headstart.tasks import make_task
from headstart.train.batches import balanced_sample_weights

TAGS = {"red": "red;warm", "green": "green;cool", "blue": "blue;cool"}
VALUES = {"red": 1.0, "green": 2.0, "blue": 3.0}


def manifest(folder, labels: dict, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for img in sorted(folder.rglob("*.png")):
            writer.writerow([str(img), labels[img.parent.name]])
    return path


def test_multilabel_fit_predicts_sets_of_labels(tiny_images, tmp_path):
    data = manifest(tiny_images, TAGS, tmp_path / "tags.csv")
    run = hs.fit(str(data), task="multilabel", strategy="linear-probe", out=str(tmp_path / "ml"), image_size=64,
                 progress=False, cache_dir=str(tmp_path / "cache"))
    assert run.classes == ["blue", "cool", "green", "red", "warm"]
    m = run.metrics
    assert m["f1_micro"] > 0.8 and m["map"] > 0.8, m
    row = run.predict([str(next((tiny_images / "green").iterdir()))], top_k=2)[0]
    assert set(row["labels"]) == {"green", "cool"}
    table = list(csv.reader(io.StringIO(format_rows([row], "csv"))))  # the CSV says the set, not only the top k
    assert table[0][:2] == ["input", "labels"] and set(table[1][1].split(";")) == {"green", "cool"}
    assert hs.load(run.path).model.task.name == "multilabel"
    metrics = hs.load(run.path).evaluate(str(data), save=False)  # the manifest's "green;cool" read back as label sets
    assert metrics["n"] == len(list(tiny_images.rglob("*.png"))) and metrics["f1_micro"] > 0.8, metrics
    folders = tiny_images.parent / "sets"  # class folders named by label set
    for name, tags in TAGS.items():
        (folders / tags).mkdir(parents=True)
        for img in (tiny_images / name).iterdir():
            (folders / tags / img.name).write_bytes(img.read_bytes())
    assert hs.load(run.path).evaluate(str(folders), save=False)["f1_micro"] == metrics["f1_micro"]
    (folders / "blue;cold").mkdir()
    (folders / "blue;cold" / "x.png").write_bytes(next((tiny_images / "blue").iterdir()).read_bytes())
    with pytest.raises(UserError, match="label 'cold' is not one of the labels"):
        run.evaluate(str(folders), save=False)



def test_joined_labels_are_multi_label_by_default_unless_classification_is_asked():
    from headstart.data.base import looks_multilabel

    assert looks_multilabel(["blue;cool", "green;cool", "red;warm"])  # every label a set
    assert looks_multilabel(["cat", "cat;dog", "dog"])  # names recur
    assert not looks_multilabel(["R&D; sales", "it", "marketing"]), "one name that holds the separator"
    assert not looks_multilabel(["cat", "dog"]) and looks_multilabel(["a|b", "a"], separator="|")


def test_auto_task_fits_joined_labels_as_multi_label(tiny_images, tmp_path):
    data = manifest(tiny_images, TAGS, tmp_path / "tags.csv")
    run = hs.fit(str(data), strategy="linear-probe", out=str(tmp_path / "auto"), image_size=64, progress=False,
                 cache_dir=str(tmp_path / "cache"))
    assert run.classes == ["blue", "cool", "green", "red", "warm"] and "f1_micro" in run.metrics
    whole = hs.fit(str(data), task="classification", strategy="linear-probe", out=str(tmp_path / "whole"), image_size=64,
                   progress=False, cache_dir=str(tmp_path / "cache"))
    assert whole.classes == ["blue;cool", "green;cool", "red;warm"]

def test_regression_on_numeric_manifest_labels(tiny_images, tmp_path):
    data = manifest(tiny_images, {k: str(v) for k, v in VALUES.items()}, tmp_path / "values.csv")
    run = hs.fit(str(data), task="regression", strategy="linear-probe", out=str(tmp_path / "reg"), image_size=64,
                 progress=False, cache_dir=str(tmp_path / "cache"))
    assert run.metrics["r2"] > 0.8, run.metrics
    value = run.predict([str(next((tiny_images / "blue").iterdir()))])[0]["prediction"]
    assert abs(value - 3.0) < 0.5
    # evaluate reads the labels as fit does: numbers, from a manifest or from class folders named by them
    metrics = hs.load(run.path).evaluate(str(data), save=False)
    assert metrics["n"] == 36 and metrics["r2"] > 0.8, metrics
    folders = tmp_path / "by_value"
    for name, value in VALUES.items():
        (folders / str(value)).mkdir(parents=True)
        for img in (tiny_images / name).iterdir():
            (folders / str(value) / img.name).write_bytes(img.read_bytes())
    assert run.evaluate(str(folders), save=False)["r2"] == pytest.approx(metrics["r2"])
    with open(data, "a") as f:
        f.write(f"{img},n/a\n")
    with pytest.raises(UserError, match=r"values.csv row 38: label 'n/a' is not a number"):
        run.evaluate(str(data), save=False)


def test_balance_weights_follow_inverse_frequency():
    task = make_task("classification")
    weights = task.balance([0] * 30 + [1] * 10, 2)
    assert weights[1] == pytest.approx(3 * weights[0], rel=1e-3)
    out = torch.tensor([[2.0, 0.0]])
    plain = make_task("classification").loss(out, torch.tensor([1]))
    assert torch.isclose(task.loss(out, torch.tensor([1])), plain), "a single example: weighting is a mean, same loss"
    two = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    assert task.loss(two, y) > make_task("classification").loss(two, y), "the rare class's error weighs more"


def test_balanced_sampler_draws_classes_equally():
    targets = torch.tensor([0] * 90 + [1] * 10)
    sampler = torch.utils.data.WeightedRandomSampler(balanced_sample_weights(targets), 20000, generator=torch.Generator().manual_seed(0))
    drawn = targets[torch.tensor(list(sampler))]
    assert abs(float((drawn == 1).float().mean()) - 0.5) < 0.03


def test_balance_in_a_fit_is_recorded(tiny_images, tmp_path):
    run = hs.fit(str(tiny_images), balance="weights", strategy="linear-probe", out=str(tmp_path / "b"), image_size=64,
                 progress=False, cache_dir=str(tmp_path / "cache"))
    import yaml

    resolved = yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]
    assert len(resolved["class_weights"]) == 3 and np.isfinite(resolved["class_weights"]).all()
    assert "balanced" in run.metrics["stages"]["head"]["solver"]
