"""Image data: the file layouts of data/files.py (ImageFolder splits, class folders, a CSV manifest) with images,
their transforms, and the image modality."""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms as T

from headstart.backbones.base import Preprocess
from headstart.data.augmentation import STANDARD_AUGMENTATION, Augmentation
from headstart.data.base import LabeledData, Modality, file_hash, label_reader, register_modality, with_task
from headstart.data.files import (FileKind, Item, collect_files, load_file_data, load_labeled_files, manifest_column,
                                 unlabeled_files, unreadable_files)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def check_image(path: str) -> tuple[int | None, str]:
    """Decode fully (catches truncated files): (shorter side, "") or (None, reason). A JPEG decodes at 1/8 scale,
    which still reads every byte of it (a truncated one fails the same way) in a quarter of the time."""
    try:
        with Image.open(path) as img:
            side = min(img.size)
            img.draft(img.mode, (1, 1))
            img.load()
            return side, ""
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"


IMAGES = FileKind("images", frozenset(IMAGE_EXTENSIONS), check_image)


def is_image(path: Path) -> bool:
    return IMAGES.owns(path)


def load_image_data(source: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                    label_column: str | None = None, task: str = "auto") -> LabeledData:
    """The layouts of data/files.py with images; the data summary records their median native size."""
    data, sizes = load_file_data(source, IMAGES, "image", val_fraction, test_fraction, seed, label_column, task)
    data.info["native_size"] = int(statistics.median(sizes))
    return data


def load_labeled_items(source: str | Path, classes: list[str], read=None, fitted=None,
                       column: str = "label") -> tuple[list[Item], list[tuple[str, str]], str]:
    return load_labeled_files(source, IMAGES, classes, read, fitted, column)


def collect_image_files(paths: list[str | Path]) -> list[str]:
    return collect_files(paths, IMAGES)


def eval_side(pre: Preprocess) -> int:
    """The shorter side an image is resized to before the centre crop."""
    return int(round(pre.input_size / pre.crop_pct))


def eval_geometry(pre: Preprocess) -> T.Compose:
    """The deterministic resize + centre crop at the input size (the image cache stores its result)."""
    interp = T.InterpolationMode(pre.interpolation)
    return T.Compose([T.Resize(eval_side(pre), interpolation=interp), T.CenterCrop(pre.input_size)])


def eval_transform(pre: Preprocess) -> T.Compose:
    return T.Compose([eval_geometry(pre), T.ToTensor(), T.Normalize(pre.mean, pre.std)])


def train_transform(pre: Preprocess, aug: Augmentation = STANDARD_AUGMENTATION) -> T.Compose:
    """The training augmentation on a PIL image: random-resized crop, then (unless turned off) a flip, then the
    views' colour distortion and blur where `aug` has them."""
    return T.Compose([
        T.RandomResizedCrop(pre.input_size, scale=(aug.min_scale, 1.0), interpolation=T.InterpolationMode(pre.interpolation)),
        *([T.RandomHorizontalFlip()] if aug.flip else []),
        *aug.distortions(pre.input_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


EXIF_ORIENTATION = 0x0112
# What open_rgb's decoding is: part of every image's cache key, so features cached under an older decoding
# (before 16-bit and float images were rescaled, EXIF rotations applied and large JPEGs drafted) are computed
# again, not reused. v4: transparent pixels on white.
DECODING = "rgb8-upright-draft2x-v4"


def open_rgb(path: str, min_side: int = 0) -> Image.Image:
    """An image file as 8-bit RGB, upright as a viewer shows it.

    Pillow's own conversion to RGB saturates wider pixels: a 16-bit PNG (microscopy, scans) came out black and
    white and a float TIFF in 0-1 all black, with no error. Those are rescaled to 0-255 first. A camera's EXIF
    orientation is applied, so a phone photo stored sideways is seen upright. Transparent pixels (a product cut out,
    an icon) are laid on white, as a viewer or a web page shows them: dropping the alpha channel leaves whatever colour
    the exporter stored under it, often black.

    `min_side`: the shorter side the caller resizes down to (0: it needs every pixel). A JPEG then decodes at the
    smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps twice that side, so the caller's resize still averages
    pixels: a 4032x3024 photo for a 256 px side took 21 ms instead of 88, its pixels 0.15 of 255 apart on average.
    """
    with Image.open(path) as img:
        if min_side:
            img.draft("RGB", (2 * min_side, 2 * min_side))  # JPEG only; other formats ignore it
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            img = to_8bit(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return img.convert("RGB")


def to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grey. 16-bit by its range; Pillow's 32-bit "I" (older
    Pillows open a 16-bit PNG so, some TIFFs hold 8-bit values in it) by the smallest range that holds its values;
    floats as 0-1 when they stay within it, else as 0-255."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    top_value = float(values.max()) if values.size else 0.0
    if img.mode == "F":
        top = 1.0 if top_value <= 1.0 else 255.0
    elif img.mode.startswith("I;16"):
        top = 65535.0
    else:
        top = next(t for t in (255.0, 65535.0, 2.0**31 - 1) if top_value <= t or t == 2.0**31 - 1)
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))


class ImageDataset(Dataset):
    """Image files -> transformed tensors, decoded anew on every access (backbones use data/image_cache.py)."""

    def __init__(self, paths: list[str], transform, min_side: int = 0):
        self.paths, self.transform, self.min_side = list(paths), transform, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[i], self.min_side))


@register_modality
class Images(Modality):
    name = "image"
    default_backbone = "efficientnet_lite0"
    input_noun = "img"
    options = ("image_size", "flip", "crop_scale")
    decoding = ("8-bit RGB (16-bit and float images rescaled to 0-255), EXIF orientation applied, transparent pixels "
                "on white; a JPEG decodes at the smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps twice the "
                "resize side (PIL Image.draft), then resizes: a full-size decode moves probabilities by about 0.03")

    def claims(self, source: Path, cfg) -> bool:
        return IMAGES.claims(source)

    def hint(self, source: Path) -> str:
        return IMAGES.hint(source)

    def load(self, cfg) -> LabeledData:
        return with_task(load_image_data(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.label_column, cfg.task), cfg)

    def load_labeled(self, source, model):
        return load_labeled_items(source, model.classes, label_reader(model), model.task, manifest_column(model))

    def collect_inputs(self, inputs, model):
        files = collect_image_files(inputs)
        return files, files

    def unreadable(self, inputs):
        return unreadable_files(inputs, IMAGES)

    def unlabeled(self, cfg):
        data, sizes = unlabeled_files(cfg, IMAGES, self.name)
        data.info["native_size"] = int(statistics.median(sizes))
        return data

    def input_key(self, x: str) -> str:
        return f"{DECODING}-{file_hash(x)}"

    def preview_html(self, described: str) -> str:
        import base64
        import html
        import io

        try:
            img = open_rgb(described, 140)
            img.thumbnail((140, 140))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            return f'<img src="{src}" alt="{html.escape(described)}" title="{html.escape(described)}">'
        except OSError:
            return html.escape(described)

    def classical_baseline(self, train, test, task):
        """Logistic regression on raw pixels (grayscale, at most 32x32), standardised."""
        if task != "classification":
            return None
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        side = min(32, *open_rgb(train[0][0]).size)  # small images stay at their own size

        def pixels(items):
            return np.stack([np.asarray(open_rgb(p, side).convert("L").resize((side, side)), dtype=np.float32).ravel() for p, _ in items])

        x_train, x_test = pixels(train), pixels(test)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(x_train, [y for _, y in train])
        return "logistic regression on raw pixels", float(clf.score(x_test, [y for _, y in test]))

