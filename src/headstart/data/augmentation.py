"""What training does to an image: crops and flips, and for self-supervised views colour distortion and blur
(a module of its own: images, the image cache and the timm body all read it)."""
from __future__ import annotations

from dataclasses import dataclass

from torchvision.transforms import v2


@dataclass(frozen=True)
class Augmentation:
    """The fine-tuning augmentation: a random-resized crop keeping `min_scale` to all of the area, and a
    horizontal flip. The defaults suit photographs; `--flip auto` / `--crop-scale auto` check them against the
    data before fine-tuning (train/augment_check.py): a mirrored digit or letter is another symbol.

    `colour` and `blur` are SimCLR's distortions (Chen et al. 2020, appendix A), for `pretrain`'s views only: a fit
    keeps them at 0, since colour can be what tells its classes apart. Without them two crops of one photo are
    told apart from the others by their colour histograms alone, and a grey or blurred input never looks like
    the twin of a colour or sharp one."""

    flip: bool = True
    min_scale: float = 0.35
    colour: float = 0.0  # SimCLR's strength s: colour jitter (0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, then grey with p 0.2
    blur: float = 0.0  # probability of a Gaussian blur, kernel a tenth of the side, sigma 0.1-2.0

    def describe(self) -> str:
        return f"crops of {self.min_scale:g}-1 of the area, " + ("horizontal flips" if self.flip else "no flips")

    def distortions(self, size: int) -> list:
        """The colour and blur transforms for `size`-px images, after the crop (PIL images and uint8 tensors alike)."""
        steps = []
        if self.colour:
            s = self.colour
            steps += [v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.5, 0.2 * s))], p=0.8),
                      v2.RandomGrayscale(p=0.2)]
        if self.blur:
            kernel = max(3, size // 10) | 1  # odd
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=self.blur))
        return steps


STANDARD_AUGMENTATION = Augmentation()
GENTLE_CROP_SCALE = 0.8  # what --crop-scale auto falls back to when the standard crops hide the class
