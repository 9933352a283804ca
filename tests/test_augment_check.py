"""--flip auto / --crop-scale auto: the trained head decides whether mirrors and crops keep the class."""
import dataclasses

import numpy as np
import pytest
import yaml
from PIL import Image

import headstart as hs
from headstart.cli import main
from headstart.config import FitConfig
from headstart.errors import UserError
from headstart.fitting import build_context
from headstart.train.augment_check import _mcnemar_z, choose_augmentation
from headstart.train.stages import HeadOnFeatures

FAST = dict(image_size=64, head_epochs=10, epochs=1, batch_size=8, progress=False, num_workers=0)


def make_sided(folder, per_class: int = 24, size: int = 32, seed: int = 0):
    """Class "left": a dark bar in the left third; "right": in the right third. A mirror swaps the classes."""
    rng = np.random.default_rng(seed)
    for side in ("left", "right"):
        (folder / side).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(230 + rng.normal(0, 12, (size, size)), 0, 255)
            x0 = int(rng.integers(1, size // 3 - 4))
            x0 = x0 if side == "left" else size - x0 - 5
            img[4:size - 4, x0:x0 + 5] = 20
            Image.fromarray(img.astype(np.uint8), mode="L").save(folder / side / f"{side}_{i:03d}.png")
    return folder


def checked(data, **options):
    ctx = build_context(FitConfig(str(data), model="efficientnet_lite0", **(FAST | options)))
    HeadOnFeatures().run(ctx)
    choose_augmentation(ctx)
    return ctx


def test_mirrors_that_swap_the_class_turn_flips_off(tmp_path):
    ctx = checked(make_sided(tmp_path / "sided"))
    note = ctx.stage_notes["augment"]
    assert ctx.backbone.augmentation.flip is False, note
    assert note["accuracy"]["mirrored"] < note["accuracy"]["original"] - 0.5
    assert "no flips" in note["summary"] and note["judge"] == "trained head"
    assert ctx.cfg.resolved["augmentation"]["flip"] is False


def test_photos_whose_class_survives_mirrors_and_crops_keep_the_standard(tiny_images):
    ctx = checked(tiny_images)
    aug, note = ctx.backbone.augmentation, ctx.stage_notes["augment"]
    assert aug.flip is True and aug.min_scale == 0.35, note
    assert ctx.cfg.resolved["augmentation"] == {"flip": True, "min_scale": 0.35}


def test_explicit_choices_are_applied_and_not_checked(tmp_path):
    ctx = checked(make_sided(tmp_path / "sided"), flip="on", crop_scale=0.5)
    assert (ctx.backbone.augmentation.flip, ctx.backbone.augmentation.min_scale) == (True, 0.5)
    assert "augment" not in ctx.stage_notes


def test_a_refit_repeats_the_validated_decision(tmp_path):
    """With no validation rows left to check on, the refit uses what the validated fit chose."""
    ctx = checked(make_sided(tmp_path / "sided"))
    resolved = ctx.cfg.resolved
    refit = build_context(ctx.cfg, data=dataclasses.replace(ctx.data, train=ctx.data.train + ctx.data.val, val=[]))
    refit.cfg.resolved = resolved  # as fitting._refit does
    HeadOnFeatures().run(refit)
    choose_augmentation(refit)
    assert refit.backbone.augmentation.flip is False


def test_fit_records_the_check_and_the_cli_validates_the_flags(tmp_path, capsys):
    run = hs.fit(str(make_sided(tmp_path / "sided")), strategy="two-stage", out=str(tmp_path / "run"), **FAST)
    assert yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]["augmentation"]["flip"] is False
    assert "no flips" in run.metrics["stages"]["augment"]["summary"]
    with pytest.raises(UserError, match="--crop-scale must be in"):
        FitConfig("x", crop_scale=1.5)
    with pytest.raises(SystemExit):
        main(["fit", "x", "--flip", "sometimes"])
    assert "--flip" in capsys.readouterr().err


def test_mcnemar_z_counts_only_the_items_that_changed():
    before = np.array([True] * 8 + [False] * 2)
    assert _mcnemar_z(before, before) == 0.0
    assert _mcnemar_z(before, np.array([False] * 8 + [False] * 2)) == pytest.approx(8 / np.sqrt(8))
    assert _mcnemar_z(before, ~before) == pytest.approx((8 - 2) / np.sqrt(10))


def test_too_few_validation_images_to_show_a_loss_keep_the_standard_without_the_passes(tmp_path, monkeypatch):
    """McNemar's z is at most sqrt(images lost), so under MIN_Z ** 2 validation images no view can be dropped:
    even mirrors that swap the class are kept, and the check spends nothing finding that out."""
    import headstart.train.augment_check as check

    ctx = build_context(FitConfig(str(make_sided(tmp_path / "sided")), model="efficientnet_lite0", **FAST))
    HeadOnFeatures().run(ctx)
    ctx.data = dataclasses.replace(ctx.data, val=ctx.data.val[:3])
    monkeypatch.setattr(check, "_correct", lambda *a: pytest.fail("no forward passes are needed"))
    choose_augmentation(ctx)
    assert ctx.backbone.augmentation.flip is True
    assert "3 validation images cannot show" in ctx.stage_notes["augment"]["summary"]
    assert _mcnemar_z(np.ones(3, bool), np.zeros(3, bool)) < check.MIN_Z  # the bound the skip relies on


def test_before_a_head_is_trained_autos_probe_judges_without_a_second_solve(tmp_path, monkeypatch):
    """setfit and finetune check before any head exists: the probe auto fitted on the frozen features judges."""
    from headstart.strategies.auto import signals

    ctx = build_context(FitConfig(str(make_sided(tmp_path / "sided")), model="efficientnet_lite0", **FAST))
    signals(ctx)
    assert ctx.frozen_probe is not None
    monkeypatch.setattr(ctx.task, "solve_head", lambda *a, **k: pytest.fail("auto's probe is the judge"))
    choose_augmentation(ctx)
    note = ctx.stage_notes["augment"]
    assert note["judge"] == "frozen-feature probe" and ctx.backbone.augmentation.flip is False, note


@pytest.mark.parametrize("classes", [3, 5])  # trained on 2 (the binary case) and 4
def test_a_standardized_probe_becomes_a_linear_layer_with_its_probabilities(classes):
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.train.probe import standardized_logistic_layer

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (80, 6)) * rng.uniform(0.1, 10, 6)
    y = rng.integers(0, classes - 1, 80)  # the last class never appears in training
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1)).fit(x, y)
    layer = standardized_logistic_layer(pipe, classes)
    with torch.no_grad():
        probs = torch.softmax(layer(torch.as_tensor(x, dtype=torch.float32)), 1).numpy()
    assert probs[:, -1].max() < 1e-6, "a class absent from training stays impossible"
    np.testing.assert_allclose(probs[:, :classes - 1], pipe.predict_proba(x), atol=1e-5)
