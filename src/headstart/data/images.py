"""Image data: ImageFolder splits, one folder of class folders (split here), or a CSV manifest `path,label`.

Unreadable images are skipped and listed, never crash a run; an empty class, a single class or no images
at all is one clear error.
"""
from __future__ import annotations

import csv
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from headstart.backbones.base import Preprocess
from headstart.data.base import AUDIO_EXTENSIONS, LabeledData, Modality, file_hash, register_modality
from headstart.data.splits import stratified_split
from headstart.errors import UserError

TRAIN_CROP_SCALE = (0.35, 1.0)  # random-resized-crop area range of the fine-tuning augmentation

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}

Item = tuple[str, int]  # (path, class index)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_image(path: str) -> tuple[int, str]:
    """Decode fully (catches truncated files); (shorter side, "") or (0, reason)."""
    try:
        with Image.open(path) as img:
            img.load()
            return min(img.size), ""
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        return 0, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"


def _filter_readable(items: list[Item]) -> tuple[list[Item], list[tuple[str, str]], list[int]]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(check_image, [p for p, _ in items]))
    good, skipped, sizes = [], [], []
    for (path, label), (size, reason) in zip(items, results):
        if reason:
            skipped.append((path, reason))
        else:
            good.append((path, label))
            sizes.append(size)
    return good, skipped, sizes


def _class_folder_items(root: Path, classes: list[str] | None = None) -> tuple[list[Item], list[str]]:
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes or dirs
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for name in dirs:
        if name not in index:
            raise UserError(f"{root / name}: class {name!r} is not one of the model's classes ({', '.join(classes)})")
        items += [(str(p), index[name]) for p in sorted((root / name).rglob("*")) if p.is_file() and is_image(p)]
    return items, classes


def _manifest_items(csv_path: Path, classes: list[str] | None = None) -> tuple[dict[str, list], list[str]]:
    """Rows `path,label[,split]`; paths relative to the CSV's folder. Returns items per split ("" = unsplit)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise UserError(f"{csv_path}: a manifest needs columns path,label (found: {', '.join(reader.fieldnames or [])})")
        rows = list(reader)
    labels = sorted({r["label"] for r in rows if r["label"]})
    classes = classes or labels
    index = {c: i for i, c in enumerate(classes)}
    per_split: dict[str, list] = {}
    for row_no, row in enumerate(rows, start=2):
        if row["label"] not in index:
            raise UserError(f"{csv_path} row {row_no}: label {row['label']!r} is not one of the classes ({', '.join(classes)})")
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else csv_path.parent / row["path"]
        per_split.setdefault((row.get("split") or "").strip().lower(), []).append((str(path), index[row["label"]]))
    return per_split, classes


def _find_split_dir(root: Path, split: str) -> Path | None:
    for name in SPLIT_NAMES[split]:
        if (root / name).is_dir():
            return root / name
    return None


def load_image_data(source: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> LabeledData:
    """Discover the layout, drop unreadable files, and split what is not split yet (stratified)."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_file():
        per_split, classes = _manifest_items(root)
        train, val, test = per_split.pop("train", []) + per_split.pop("", []), per_split.pop("val", []), per_split.pop("test", [])
        layout = "manifest"
    elif _find_split_dir(root, "train"):
        train, classes = _class_folder_items(_find_split_dir(root, "train"))
        val = _class_folder_items(_find_split_dir(root, "val"), classes)[0] if _find_split_dir(root, "val") else []
        test = _class_folder_items(_find_split_dir(root, "test"), classes)[0] if _find_split_dir(root, "test") else []
        layout = "splits"
    else:
        train, classes = _class_folder_items(root)
        val, test = [], []
        layout = "class-folders"

    train, skipped, sizes = _filter_readable(train)
    val, skipped_val, _ = _filter_readable(val)
    test, skipped_test, _ = _filter_readable(test)
    _check_classes(root, classes, train, skipped)

    if not test and layout != "splits":
        train, test = stratified_split(train, [y for _, y in train], test_fraction, seed)
    if not val:
        train, val = stratified_split(train, [y for _, y in train], val_fraction, seed)
    return LabeledData("image", "classification", classes, train, val, test, layout, skipped + skipped_val + skipped_test,
                       {"native_size": int(statistics.median(sizes))})


def _check_classes(root: Path, classes: list[str], train: list[Item], skipped: list) -> None:
    if not train:
        extra = f" ({len(skipped)} unreadable)" if skipped else ""
        raise UserError(f"{root}: no readable training images{extra}; expected class folders of images or a CSV path,label")
    if len(classes) < 2:
        raise UserError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two class folders")
    counts = [sum(1 for _, y in train if y == i) for i in range(len(classes))]
    for name, count in zip(classes, counts):
        if count == 0:
            raise UserError(f"{root}: class {name!r} has no readable training images; add images or remove the folder")


def load_labeled_items(source: str | Path, classes: list[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every labeled image under `source` (class folders, ImageFolder splits' test/val, or a manifest)."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_file():
        per_split, _ = _manifest_items(root, classes)
        items = per_split.get("test") or [it for split in per_split.values() for it in split]
    else:
        items = _class_folder_items(root, classes)[0]
    items, skipped, _ = _filter_readable(items)
    if not items:
        raise UserError(f"{root}: no readable labeled images (expected class folders named {', '.join(classes)})")
    return items, skipped


def collect_image_files(paths: list[str | Path]) -> list[str]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image(f))
        elif p.is_file():
            files.append(str(p))
        else:
            raise UserError(f"{p} does not exist")
    if not files:
        raise UserError(f"no images found in {', '.join(map(str, paths))}")
    return files


def eval_transform(pre: Preprocess) -> T.Compose:
    interp = T.InterpolationMode(pre.interpolation)
    return T.Compose([
        T.Resize(int(round(pre.input_size / pre.crop_pct)), interpolation=interp),
        T.CenterCrop(pre.input_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def train_transform(pre: Preprocess) -> T.Compose:
    """Standard fine-tuning augmentation: random-resized crop and horizontal flip."""
    return T.Compose([
        T.RandomResizedCrop(pre.input_size, scale=TRAIN_CROP_SCALE, interpolation=T.InterpolationMode(pre.interpolation)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


class ImageDataset(Dataset):
    """Image files -> transformed tensors, decoded anew on every access (backbones use data/image_cache.py)."""

    def __init__(self, paths: list[str], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(open_rgb(self.paths[i]))


@register_modality
class Images(Modality):
    name = "image"
    default_backbone = "efficientnet_lite0"
    input_noun = "img"

    def claims(self, source: Path, cfg) -> bool:
        if source.is_file():
            return source.suffix.lower() == ".csv" and "path" in _csv_columns(source) and not _lists_audio(source)
        return source.is_dir() and any(is_image(p) for p in _first_files(source))

    def load(self, cfg) -> LabeledData:
        return load_image_data(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.seed)

    def load_labeled(self, source, model):
        return load_labeled_items(source, model.classes)

    def collect_inputs(self, inputs, model):
        files = collect_image_files(inputs)
        return files, files

    def input_key(self, x: str) -> str:
        return file_hash(x)

    def preview_html(self, described: str) -> str:
        import base64
        import html
        import io

        try:
            img = open_rgb(described)
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
            return np.stack([np.asarray(open_rgb(p).convert("L").resize((side, side)), dtype=np.float32).ravel() for p, _ in items])

        x_train, x_test = pixels(train), pixels(test)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(x_train, [y for _, y in train])
        return "logistic regression on raw pixels", float(clf.score(x_test, [y for _, y in test]))


def _csv_columns(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return next(csv.reader(f), [])


def _lists_audio(path: Path) -> bool:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        row = next(csv.DictReader(f), None) or {}
    return Path(row.get("path") or "").suffix.lower() in AUDIO_EXTENSIONS


def _first_files(root: Path, limit: int = 200) -> list[Path]:
    """A sample of the files under `root` (enough to tell images from audio without walking everything)."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            found.append(p)
            if len(found) >= limit:
                break
    return found
