"""Learning-rate range test (Smith 2015; fastai's and Lightning's lr_find) on the fine-tuning setup itself.

The top group's rate grows exponentially from `min_lr` to `max_lr` over `steps` mini-batches while every
other group keeps its ratio to it (Lightning's tuner would set every group to one rate); the groups are
those of the fine-tuning stage that will use the rate (`stage`: BitFit's biases and norms, LoRA's adapters,
LP-FT's one uniform rate, ...; two-stage's discriminative groups when none is given), so the suggestion is the
`--lr` for that stage's own setup. The smoothed training loss is recorded until it diverges. The suggestion is
fastai's `valley`, halfway down the longest run of falling loss (`suggest`), and the weights are restored afterwards. Out of memory, the sweep
starts again at half the batch.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from headstart.model import TransferModel
from headstart.train.batches import labeled_loader, to_device
from headstart.train.memory import halving_batches
from headstart.train.module import adamw


def lr_range_test(ctx, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100, beta: float = 0.9,
                  diverge: float = 4.0, stage=None) -> dict:
    """`stage`: the FineTune (or variant) whose parameter groups sweep, already `prepare`d (LoRA's adapters)."""
    from headstart.train.stages import FineTune  # stages import this module for --lr auto

    cfg = ctx.cfg
    stage = stage or FineTune(discriminative=True)
    top_lr = cfg.lr if isinstance(cfg.lr, float) else 1e-3
    cfg_lr, cfg.lr = cfg.lr, top_lr  # param_groups reads cfg.lr for the ratios
    net = TransferModel(ctx.backbone, ctx.head, ctx.data.classes, task=ctx.task).to(ctx.device).train()
    groups, eval_norms = stage.param_groups(ctx)
    cfg.lr = cfg_lr
    ratios = [g["lr"] / top_lr for g in groups]  # relative to --lr: a stage's lr_scale (LP-FT) stays in the ratio
    trainable = sum(p.numel() for g in groups for p in g["params"])
    saved = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    targets = ctx.task.targets(y for _, y in ctx.data.train)
    # Out of memory, the sweep starts again from the saved weights at half the batch (its losses are compared only
    # with each other, so no accumulation is needed). The weights are saved anyway, on any device.
    (lrs, losses), batch = halving_batches(
        lambda b: _sweep(ctx, net, groups, ratios, eval_norms, targets, b, min_lr, max_lr, steps, beta, diverge),
        cfg.batch_size,
        lambda b: "out of memory in the learning-rate range test at 1 example a step: give --lr instead of auto" if b == 1 else None,
        lambda b: net.load_state_dict(saved))
    ctx.progress.close()
    net.load_state_dict(saved)
    return {"lrs": lrs, "losses": losses, "suggestion": suggest(lrs, losses), "min_lr": min_lr, "max_lr": max_lr,
            "stage": stage.name, "trainable_params": trainable, **({"batch_size": batch} if batch != cfg.batch_size else {})}


def _sweep(ctx, net, groups, ratios, eval_norms, targets, batch_size, min_lr, max_lr, steps, beta, diverge):
    """The rate grows step by step; the bias-corrected running mean of the loss at each rate, until it diverges."""
    optimizer = adamw(groups, ctx.cfg.weight_decay)
    loader = labeled_loader(ctx.backbone, [x for x, _ in ctx.data.train], targets, True, batch_size, num_workers=ctx.num_workers)
    lrs, losses, smoothed, best = [], [], 0.0, math.inf
    batches = iter(loader)
    ctx.progress.open("lr range test", total=steps, unit="batch")
    for step in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        lr = min_lr * (max_lr / min_lr) ** (step / max(1, steps - 1))
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        for module in eval_norms:
            module.eval()
        loss = ctx.task.loss(net(to_device(x, ctx.device)), to_device(y, ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = beta * smoothed + (1 - beta) * float(loss.detach())
        value = smoothed / (1 - beta ** (step + 1))  # bias-corrected running mean
        lrs.append(lr)
        losses.append(value)
        ctx.progress.advance(1, 0.0)
        best = min(best, value)
        if step > 5 and (not math.isfinite(value) or value > diverge * best):
            break
    return lrs, losses


def suggest(lrs: list[float], losses: list[float]) -> float:
    """fastai's default rule, `valley`: in the curve less its noisy first tenth and diverging last 5 points, the
    longest run of falling loss (a longest decreasing subsequence: noise may interrupt it), and the rate halfway down.

    The steepest single slope (Lightning's rule, ours before) lands on whichever noisy step fell most: on one curve
    it suggested 5.9e-6 where the loss bottomed near 1e-3. A long valley is a trend, not a step.
    """
    lo, hi = len(lrs) // 10, len(lrs) - 5
    if hi - lo < 5:
        return lrs[int(np.argmin(losses))] if lrs else 1e-3
    lrs, losses = lrs[lo:hi], losses[lo:hi]
    run = [1] * len(losses)  # run[i]: the longest falling subsequence that ends at i
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[end]:
            end = i
    start = end - run[end]  # as fastai counts it
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])


def plot_lr_find(result: dict, path) -> None:
    from headstart.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["losses"])
    ax.axvline(result["suggestion"], color="red", ls="--", label=f"suggested {result['suggestion']:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate of the top layer group (lower groups keep their ratio)")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    from pathlib import Path

    _save(fig, Path(path))
