"""Integration on the real image sets in ../shared/data (skipped where it is absent): tiny subsets, bundled backbone."""
import csv

import pytest

import headstart as hs

from conftest import needs_shared


def subset_manifest(root, split: str, per_class: int, path) -> str:
    rows = []
    for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        for img in sorted(class_dir.iterdir())[:per_class]:
            rows.append({"path": str(img), "label": class_dir.name})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.mark.parametrize("name,held_out,floor", [("hymenoptera", "val", 0.65), ("tf_flowers", "val", 0.5), ("cifar10_subset", "test", 0.35)])
def test_linear_probe_on_real_images(name, held_out, floor, tmp_path):
    root = needs_shared(name)
    train = subset_manifest(root, "train", 20, tmp_path / "train.csv")
    test = subset_manifest(root, held_out, 10, tmp_path / "test.csv")
    run = hs.fit(train, strategy="linear-probe", out=str(tmp_path / "run"), image_size=128, test_fraction=0.0, progress=False)
    metrics = run.evaluate(test)
    assert metrics["accuracy"] >= floor, f"{metrics['accuracy']} (chance is {1 / len(run.classes):.2f})"


def test_two_stage_on_real_images_runs_both_stages(tmp_path):
    root = needs_shared("hymenoptera")
    train = subset_manifest(root, "train", 16, tmp_path / "train.csv")
    run = hs.fit(train, strategy="two-stage", out=str(tmp_path / "run"), image_size=96, epochs=1, head_epochs=10,
                 test_fraction=0.25, progress=False)
    assert set(run.metrics["stages"]) >= {"features", "head", "finetune"}
    assert run.metrics["accuracy"] >= 0.5
