"""Choosing the input size: CPU cost grows with the square of the side, so small images are not blown up to 224.

Rule (documented in the README): a requested size wins; on a GPU the backbone's own size (compute is cheap
there, and upsampling small images to the pre-training size is what the published fine-tuning numbers use);
otherwise (CPU) 5x the median native shorter side, rounded up to a multiple of 32, at least 96 px and at most
the backbone's own size. Images smaller than the input are resized whole (no center-crop margin): they have
no context to spare.

Why 5x: on 32-px CIFAR-10 images (3,000 training, two-stage, 2 CPU cores) 4x = 128 px scored 0.811 in 475 s and
5x = 160 px 0.828 in 798 s, where a full fine-tune at 224 px reached 0.814 on a GPU; 160 px costs half of 224's
compute. Photos (native >= 45 px) are at the backbone's size either way.
"""
from __future__ import annotations

import math

from headstart.backbones.base import Preprocess

UPSCALE, MIN_SIZE, MULTIPLE = 5, 96, 32


def choose_preprocess(default: Preprocess, native_size: int, requested: int | None, gpu: bool = False) -> tuple[Preprocess, str]:
    if requested:
        size, why = int(requested), "requested"
    elif gpu:
        size, why = default.input_size, "auto: the backbone's own size on a GPU"
    else:
        wanted = MULTIPLE * math.ceil(UPSCALE * max(native_size, 1) / MULTIPLE)
        size = min(default.input_size, max(MIN_SIZE, wanted))
        why = (f"auto: {UPSCALE}x the median native {native_size} px, within [{MIN_SIZE}, backbone's {default.input_size}]"
               if default.input_size >= MIN_SIZE else  # a body from a run trained below the floor: its size is the cap
               f"auto: the backbone's own {default.input_size} px (it was trained at that size, below the {MIN_SIZE} px floor)")
    pre = default.with_size(size)
    if native_size and native_size < size:
        pre = Preprocess(size, pre.mean, pre.std, pre.interpolation, 1.0)
    return pre, why
