"""What fine-tuning does to a training image: crops and flips (a module of its own: images, the image cache and
the timm body all read it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """The fine-tuning augmentation: a random-resized crop keeping `min_scale` to all of the area, and a
    horizontal flip. The defaults suit photographs; `--flip auto` / `--crop-scale auto` check them against the
    data before fine-tuning (train/augment_check.py): a mirrored digit or letter is another symbol."""

    flip: bool = True
    min_scale: float = 0.35

    def describe(self) -> str:
        return f"crops of {self.min_scale:g}-1 of the area, " + ("horizontal flips" if self.flip else "no flips")


STANDARD_AUGMENTATION = Augmentation()
GENTLE_CROP_SCALE = 0.8  # what --crop-scale auto falls back to when the standard crops hide the class
