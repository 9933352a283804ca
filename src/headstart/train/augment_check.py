"""Before an image body trains: do the standard crops and flips keep the class? Asked of a head on frozen features.

ImageNet bodies were pre-trained on random crops and mirrors of photographs, so a head on their frozen features
reads a mirrored or cropped validation photo almost as well as the original (hymenoptera, tf_flowers, cifar10:
96 % of its chance-corrected accuracy on mirrors, 84-89 % on 0.35 crops). Where the images are symbols or far
from photographs, a mirror is another symbol and a small crop hides it: on the digits demo the same head kept
84 % on mirrors and 60 % on 0.35 crops, and fine-tuning on such views trained towards the wrong classes
(benchmarks/README.md, "Augmentation check"). So `--flip auto` / `--crop-scale auto` measure it: one forward pass per view over at most MAX_IMAGES
validation images, and a view is dropped only when the head clearly loses it (a paired test on those images and
a loss of skill beyond FLIP_KEEPS / CROP_KEEPS). Under MIN_Z ** 2 validation images no drop can be that clear, so
nothing is measured.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from headstart.data.augmentation import GENTLE_CROP_SCALE, STANDARD_AUGMENTATION, Augmentation
from headstart.progress import EVAL_COST
from headstart.train.context import FitContext
from headstart.train.batches import map_batches
from headstart.train.feature_cache import features_of

MAX_IMAGES = 512  # validation images looked at (and training images for a stand-in head): bounded cost
FLIP_KEEPS = 0.9  # a mirror should be the same class: it must keep 90 % of the chance-corrected accuracy
CROP_KEEPS = 0.8  # a crop may hide part of the object, so 80 %
MIN_Z = 2.0  # the drop must also be clear on these images (McNemar's z on paired outcomes), not a few images' noise
MIN_SKILL = 0.2  # a head this close to chance (chance-corrected accuracy) cannot judge: the standard stays


def choose_augmentation(ctx: FitContext) -> None:
    """Set `ctx.backbone.augmentation` for --flip auto / --crop-scale auto, and say why in the stage notes."""
    cfg, body = ctx.cfg, ctx.backbone
    if not isinstance(getattr(body, "augmentation", None), Augmentation) or (cfg.flip != "auto" and cfg.crop_scale != "auto"):
        return
    if "augmentation" in cfg.resolved:  # decided by the validated fit; a refit on train + val repeats it
        body.augmentation = Augmentation(**cfg.resolved["augmentation"])
        return
    note = _check(ctx)
    body.augmentation = aug = Augmentation(note.pop("flip"), note.pop("min_scale"))
    cfg.resolved["augmentation"] = {"flip": aug.flip, "min_scale": aug.min_scale}
    ctx.stage_notes["augment"] = {"summary": f"{aug.describe()} ({note.pop('why')})", **note}


def _check(ctx: FitContext) -> dict:
    cfg, body = ctx.cfg, ctx.backbone
    flip = body.augmentation.flip
    scale = body.augmentation.min_scale  # an explicit --crop-scale / --flip was applied by the backbone's adapt
    standard = {"flip": flip, "min_scale": scale}
    if ctx.task.name != "classification" or not ctx.data.val:
        return {**standard, "why": "standard: checked only for classification with a validation split"}
    if not body.pretrained:  # random features read every view at chance: no judge to ask, and passes to spare
        return {**standard, "why": "standard: an untrained body's features cannot judge views"}
    if len(ctx.data.val) < MIN_Z ** 2:  # z <= sqrt(images lost): no view could be dropped, so spare the passes
        return {**standard, "why": f"standard: {len(ctx.data.val)} validation images cannot show a view losing "
                                   f"the class (it takes {math.ceil(MIN_Z ** 2)})"}
    rng = np.random.default_rng(cfg.seed)
    val = [ctx.data.val[i] for i in sorted(rng.permutation(len(ctx.data.val))[:MAX_IMAGES])]
    head, judge = _judge(ctx, rng)
    inputs, labels = [x for x, _ in val], np.array([y for _, y in val])
    views = {"original": None}
    if cfg.flip == "auto":
        views["mirrored"] = lambda x: x.flip(-1)
    if cfg.crop_scale == "auto":
        views.update({f"crops {s:g}": _crops(body.preprocess.input_size, s, cfg.seed)
                      for s in (STANDARD_AUGMENTATION.min_scale, GENTLE_CROP_SCALE)})
    right = _correct(ctx, head, inputs, labels, views)
    chance = np.bincount(labels).max() / len(labels)
    skill = {name: (r.mean() - chance) / max(1 - chance, 1e-9) for name, r in right.items()}
    note = {"judge": judge, "images": len(val), "accuracy": {k: round(float(r.mean()), 4) for k, r in right.items()}}
    if chance >= 1 or skill["original"] < MIN_SKILL:
        return {**standard, **note, "why": f"standard: the {judge} is too close to chance "
                                            f"({right['original'].mean():.2f}) to judge views"}

    def loses(view: str, keeps: float) -> bool:
        return skill[view] < keeps * skill["original"] and _mcnemar_z(right["original"], right[view]) >= MIN_Z

    acc = note["accuracy"]
    said = [f"the {judge} reads {len(val)} validation images at {acc['original']:.2f}"]
    if cfg.flip == "auto":
        flip = not loses("mirrored", FLIP_KEEPS)
        said.append(f"mirrored {acc['mirrored']:.2f}" + ("" if flip else ": no flips"))
    if cfg.crop_scale == "auto":
        for s in (STANDARD_AUGMENTATION.min_scale, GENTLE_CROP_SCALE, 1.0):
            if s == 1.0 or not loses(f"crops {s:g}", CROP_KEEPS):
                scale = s
                break
        said.append(", ".join(f"{k} {v:.2f}" for k, v in acc.items() if k.startswith("crops")) + f": crops of {scale:g}-1")
    return {"flip": flip, "min_scale": scale, **note, "why": "; ".join(said)}


def _judge(ctx: FitContext, rng: np.random.Generator) -> tuple[nn.Module, str]:
    """The trained head; before one exists (finetune, setfit), auto's probe on the frozen features, or else a
    logistic regression on frozen features of at most MAX_IMAGES training images (through the feature cache)."""
    if ctx.head_trained and not ctx.backbone_changed:
        return ctx.head, "trained head"
    if ctx.frozen_probe is not None and not ctx.backbone_changed:
        return ctx.frozen_probe, "frozen-feature probe"
    train = [ctx.data.train[i] for i in sorted(rng.permutation(len(ctx.data.train))[:MAX_IMAGES])]
    feats, _, _ = features_of(ctx.cache, ctx.backbone, ctx.modality, [x for x, _ in train], 2 * ctx.cfg.batch_size,
                              ctx.device, ctx.num_workers, ctx.progress, "augment check")
    layer = nn.Linear(feats.shape[1], len(ctx.data.classes))
    ctx.task.solve_head(layer, feats, ctx.task.targets(y for _, y in train), seed=ctx.cfg.seed)
    return layer, "frozen-feature probe"


def _crops(size: int, min_scale: float, seed: int):
    crop = v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)
    generator = torch.Generator().manual_seed(seed)

    def apply(x: torch.Tensor) -> torch.Tensor:
        out = []
        for img in x:  # the same crops on every run: v2 draws from the global generator, so fork it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))
                out.append(crop(img))
        return torch.stack(out)

    return apply


@torch.no_grad()
def _correct(ctx: FitContext, head: nn.Module, inputs: list, labels: np.ndarray, views: dict) -> dict[str, np.ndarray]:
    """Per view, whether the head on the frozen body's features of each (transformed) input is right."""
    body = ctx.backbone.eval().to(ctx.device)
    head = head.eval().to(ctx.device)
    ctx.progress.open("augment check", total=len(inputs) * len(views), unit="img")

    def predict(x: torch.Tensor) -> torch.Tensor:  # [n, views] predicted classes
        classes = [head(body.forward_features(x if view is None else view(x))).argmax(1) for view in views.values()]
        ctx.progress.advance(len(x) * len(views), EVAL_COST * len(x) * len(views))
        return torch.stack(classes, dim=1)

    predicted = map_batches(predict, body, inputs, 2 * ctx.cfg.batch_size, ctx.device, ctx.num_workers).long().numpy()
    ctx.progress.close()
    return {name: predicted[:, k] == labels for k, name in enumerate(views)}


def _mcnemar_z(before: np.ndarray, after: np.ndarray) -> float:
    """How clearly `after` loses to `before` on the same items: (lost - gained) / sqrt(lost + gained)."""
    lost, gained = int(np.sum(before & ~after)), int(np.sum(~before & after))
    return (lost - gained) / math.sqrt(lost + gained) if lost + gained else 0.0
