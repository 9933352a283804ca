"""The learning-rate range test: a sensible suggestion, weights untouched, and --lr auto wired into fine-tuning."""
import numpy as np
import pytest

import headstart as hs
from headstart.train.lr_find import suggest


def test_suggestion_is_halfway_down_the_valley():
    lrs = list(np.logspace(-6, 0, 60))
    losses = [2.0 - 1.5 / (1 + np.exp(-(np.log10(lr) + 3) * 4)) for lr in lrs]  # falls fastest at 1e-3
    losses[-3:] = [5.0, 9.0, 20.0]  # divergence at the end
    assert suggest(lrs, losses) == pytest.approx(1e-3, rel=0.5)


def test_suggestion_ignores_one_noisy_drop():
    """A flat, noisy start with one sharp dip (the steepest slope of the whole curve) and a long descent later: the
    suggestion lies in the descent, not at the dip."""
    lrs = list(np.logspace(-7, 0, 100))
    rng = np.random.default_rng(0)
    losses = [2.3 + 0.02 * rng.standard_normal() - (1.5 if 0.9e-4 < lr < 1e-1 else 0) * np.log10(lr / 1e-4) / 3
              if lr > 1e-4 else 2.3 + 0.02 * rng.standard_normal() for lr in lrs]
    dip = 25  # lr ~ 5e-6
    losses[dip] -= 0.8
    losses[-4:] = [4.0, 8.0, 16.0, 30.0]
    slopes = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    assert abs(int(np.argmin(slopes[10:-2])) + 10 - dip) <= 1, "the dip is the steepest slope"
    assert 1e-4 < suggest(lrs, losses) < 1e-1


def test_lr_find_and_lr_auto(tiny_images, tmp_path):
    options = dict(image_size=64, batch_size=8, progress=False, cache_dir=str(tmp_path / "cache"), num_workers=0)
    result = hs.lr_find(str(tiny_images), out=str(tmp_path / "lr"), steps=25, **options)
    assert 1e-7 <= result["suggestion"] <= 1.0 and len(result["lrs"]) == len(result["losses"]) >= 6
    assert all(a < b for a, b in zip(result["lrs"], result["lrs"][1:])), "rates grow"
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 5000
    run = hs.fit(str(tiny_images), strategy="two-stage", out=str(tmp_path / "fit"), lr="auto", epochs=1, **options)
    chosen = run.metrics["stages"]["lr_find"]["suggestion"]
    assert 1e-7 <= chosen <= 1.0
    import yaml

    assert yaml.safe_load((run.path / "config.yaml").read_text())["lr"] == "auto", "config.yaml keeps the request"
    fine = [r for r in run.history if r["stage"] == "finetune" and r["epoch"] >= 1]
    assert fine and max(r["lr"] for r in fine) <= chosen * 1.0001, "fine-tuning ran at the suggested peak rate"


def test_range_test_sweeps_the_strategys_own_groups(tiny_images, tmp_path):
    """--lr auto / lr-find sweep what the strategy trains (BitFit's biases and norms, LoRA's adapters), weights restored."""
    import torch

    from headstart.train.lr_find import lr_range_test
    from headstart.train.variants import LoRA, BitFit
    from test_strategies import make_context

    ctx = make_context(tiny_images, tmp_path, lr=1e-3)
    before = {k: v.clone() for k, v in ctx.backbone.state_dict().items()}
    head = sum(p.numel() for p in ctx.head.parameters())
    everything = head + sum(p.numel() for p in ctx.backbone.parameters())  # two-stage's groups (the default)
    bitfit = lr_range_test(ctx, steps=3, stage=BitFit())
    assert bitfit["stage"] == "bitfit" and head < bitfit["trainable_params"] < everything / 10
    assert all(torch.equal(before[k], v) for k, v in ctx.backbone.state_dict().items()), "weights restored"
    lora = LoRA()
    lora.prepare(ctx)
    result = lr_range_test(ctx, steps=3, stage=lora)
    assert result["stage"] == "lora" and result["trainable_params"] == head + lora.info["adapter_params"]


def test_lr_auto_runs_the_range_test_on_the_stage_that_trains(tiny_images, tmp_path, monkeypatch):
    """FineTune.run hands itself, prepared (LoRA's adapters in place), to the range test; its suggestion becomes --lr."""
    import headstart.train.lr_find as lr_find
    from headstart.strategies import STRATEGIES
    from test_strategies import make_context

    seen = []

    class Stop(Exception):
        pass

    def fake_range_test(ctx, stage=None, **_):
        seen.append((stage, dict(stage.info)))
        raise Stop  # before training: only the hand-over is under test

    monkeypatch.setattr(lr_find, "lr_range_test", fake_range_test)
    ctx = make_context(tiny_images, tmp_path, lr="auto")
    lora = STRATEGIES.get("lora").stages()[-1]
    with pytest.raises(Stop):
        lora.run(ctx)
    assert seen[0][0] is lora and seen[0][1]["adapter_params"] > 0, "the range test sees LoRA's adapters"


def test_range_test_out_of_memory_sweeps_again_at_half_the_batch(tiny_images, tmp_path, monkeypatch):
    import torch

    from headstart.model import TransferModel
    from headstart.train.lr_find import lr_range_test
    from test_strategies import make_context

    forward, seen = TransferModel.forward, []

    def limited(self, x):
        seen.append(len(x))
        if torch.is_grad_enabled() and len(x) > 4:
            if len(seen) > 1:  # a step taken first: the sweep must start again from the saved weights
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    ctx = make_context(tiny_images, tmp_path, lr=1e-3, batch_size=8)
    before = {k: v.clone() for k, v in ctx.backbone.state_dict().items()}
    monkeypatch.setattr(TransferModel, "forward", limited)
    result = lr_range_test(ctx, steps=8)
    assert seen[:2] == [8, 8] and set(seen[2:]) == {4}, "one step at 8, out of memory at the second, then 4 a step"
    assert result["batch_size"] == 4 and len(result["lrs"]) >= 6
    assert all(torch.equal(before[k], v) for k, v in ctx.backbone.state_dict().items()), "weights restored"
