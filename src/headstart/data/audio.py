"""Audio data: the image layouts with clips (split folders, one folder of class folders, a CSV manifest).

Clips are decoded with soundfile (wav, flac, ogg, mp3 where libsndfile has it), mixed down to mono and
resampled with scipy's polyphase filter. Unreadable or empty clips are skipped and listed, never crash a
run; an empty class, a single class or no clips at all is one clear error. The small decode / resample /
pad-crop functions here are what the audio backbones' datasets call.
"""
from __future__ import annotations

import math
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from headstart.data.base import AUDIO_EXTENSIONS, LabeledData, Modality, file_hash, register_modality
from headstart.data.images import SPLIT_NAMES, _csv_columns, _find_split_dir, _first_files, _manifest_items
from headstart.data.splits import stratified_split
from headstart.errors import UserError

Item = tuple[str, int]  # (path, class index)


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


# --- decoding, reused by the backbones' datasets -------------------------------------------------------------

def decode(path: str) -> tuple[np.ndarray, int]:
    """The whole clip as mono float32 in [-1, 1] (mean of channels) and its sample rate."""
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(rate)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `rate` to `target` Hz; exact length round(len * target / rate)."""
    if rate == target or len(wave) == 0:
        return wave.astype(np.float32, copy=False)
    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def load_clip(path: str, rate: int) -> np.ndarray:
    """Decode, mix down and resample to `rate` Hz."""
    wave, native = decode(path)
    return resample(wave, native, rate)


def pad_crop(wave: np.ndarray, length: int, random: bool = False) -> np.ndarray:
    """Exactly `length` samples. Eval: the centered window of a longer clip, or a shorter clip centered in zeros.
    random=True (training): a random window, or a random offset in the zeros (a shift in time). Offsets come from
    torch's generator, which seed_everything seeds and DataLoader workers reseed per worker."""
    n = len(wave)
    if n >= length:
        start = int(torch.randint(0, n - length + 1, ())) if random else (n - length) // 2
        return wave[start:start + length]
    left = int(torch.randint(0, length - n + 1, ())) if random else (length - n) // 2
    out = np.zeros(length, dtype=np.float32)
    out[left:left + n] = wave
    return out


def check_clip(path: str) -> tuple[float, int, str]:
    """Decode fully (catches truncated or corrupt files): (seconds, native rate, "") or (0, 0, reason)."""
    try:
        wave, rate = decode(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure means "unreadable"
        text = str(err).splitlines()[0] if str(err) else "unreadable"
        return 0.0, 0, f"{type(err).__name__}: {text}"
    if len(wave) == 0 or rate <= 0:
        return 0.0, 0, "empty clip (no samples)"
    if not np.isfinite(wave).all():
        return 0.0, 0, "clip contains NaN or infinite samples"
    return len(wave) / rate, rate, ""


# --- layouts ---------------------------------------------------------------------------------------------------

def _filter_readable(items: list[Item]) -> tuple[list[Item], list[tuple[str, str]], list[float], list[int]]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(check_clip, [p for p, _ in items]))
    good, skipped, seconds, rates = [], [], [], []
    for item, (secs, rate, reason) in zip(items, results):
        if reason:
            skipped.append((item[0], reason))
        else:
            good.append(item)
            seconds.append(secs)
            rates.append(rate)
    return good, skipped, seconds, rates


def _class_folder_items(root: Path, classes: list[str] | None = None) -> tuple[list[Item], list[str]]:
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes or dirs
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for name in dirs:
        if name not in index:
            raise UserError(f"{root / name}: class {name!r} is not one of the model's classes ({', '.join(classes)})")
        items += [(str(p), index[name]) for p in sorted((root / name).rglob("*")) if p.is_file() and is_audio(p)]
    return items, classes


def _manifest_splits(csv_path: Path, classes: list[str] | None = None) -> tuple[dict[str, list[Item]], list[str]]:
    """Manifest rows per split ("" = unsplit); split names as for folders (val, valid, validation ...)."""
    per_split, classes = _manifest_items(csv_path, classes)
    alias = {name: split for split, names in SPLIT_NAMES.items() for name in names} | {"": ""}
    unknown = sorted(set(per_split) - set(alias))
    if unknown:
        raise UserError(f"{csv_path}: unknown value(s) in the split column: {', '.join(map(repr, unknown))} "
                        "(use train, val or test, or leave it empty)")
    merged: dict[str, list[Item]] = {}
    for name, items in per_split.items():
        merged.setdefault(alias[name], []).extend(items)
    return merged, classes


def _check_classes(root: Path, classes: list[str], train: list[Item], skipped: list) -> None:
    if not train:
        extra = f" ({len(skipped)} unreadable)" if skipped else ""
        raise UserError(f"{root}: no readable training clips{extra}; expected class folders of audio files "
                        f"({', '.join(sorted(AUDIO_EXTENSIONS))}) or a CSV path,label")
    if len(classes) < 2:
        raise UserError(f"{root}: only one class ({classes[0]!r}); a classifier needs at least two classes")
    counts = [sum(1 for _, y in train if y == i) for i in range(len(classes))]
    for name, count in zip(classes, counts):
        if count == 0:
            raise UserError(f"{root}: class {name!r} has no readable training clips; add clips or remove the class")


def load_audio_data(source: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0) -> LabeledData:
    """Discover the layout, drop unreadable clips, and split what is not split yet (stratified)."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_file():
        per_split, classes = _manifest_splits(root)
        train, val, test = per_split.get("train", []) + per_split.get("", []), per_split.get("val", []), per_split.get("test", [])
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

    train, skipped, seconds, rates = _filter_readable(train)
    val, skipped_val, _, _ = _filter_readable(val)
    test, skipped_test, _, _ = _filter_readable(test)
    _check_classes(root, classes, train, skipped)

    if not test and layout != "splits":
        train, test = stratified_split(train, [y for _, y in train], test_fraction, seed)
    if not val:
        train, val = stratified_split(train, [y for _, y in train], val_fraction, seed)
    info = {
        "median_seconds": round(statistics.median(seconds), 3),
        "p95_seconds": round(float(np.percentile(seconds, 95)), 3),
        "max_seconds": round(max(seconds), 3),
        "native_sample_rate": int(statistics.median(rates)),
    }
    return LabeledData("audio", "classification", classes, train, val, test, layout, skipped + skipped_val + skipped_test, info)


def load_labeled_clips(source: str | Path, classes: list[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Every labeled clip under `source`: class folders, a split layout's test/ (else val/), a manifest's test rows (else all)."""
    root = Path(source)
    if not root.exists():
        raise UserError(f"data {root} does not exist")
    if root.is_file():
        per_split, _ = _manifest_splits(root, classes)
        items = per_split.get("test") or [it for split in per_split.values() for it in split]
    elif _find_split_dir(root, "train") and (_find_split_dir(root, "test") or _find_split_dir(root, "val")):
        items = _class_folder_items(_find_split_dir(root, "test") or _find_split_dir(root, "val"), classes)[0]
    else:
        items = _class_folder_items(root, classes)[0]
    items, skipped, _, _ = _filter_readable(items)
    if not items:
        raise UserError(f"{root}: no readable labeled clips (expected class folders named {', '.join(classes)})")
    return items, skipped


def collect_audio_files(paths: list[str | Path]) -> list[str]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and is_audio(f))
        elif p.is_file():
            files.append(str(p))
        else:
            raise UserError(f"{p} does not exist")
    if not files:
        raise UserError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found in {', '.join(map(str, paths))}")
    return files


def _manifest_lists_audio(path: Path, rows: int = 20) -> bool:
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        paths = [row.get("path") or "" for _, row in zip(range(rows), reader)]
    return bool(paths) and sum(Path(p).suffix.lower() in AUDIO_EXTENSIONS for p in paths) > len(paths) / 2


@register_modality
class Audio(Modality):
    name = "audio"
    default_backbone = "mel-efficientnet_lite0"
    input_noun = "clip"

    def claims(self, source: Path, cfg) -> bool:
        if source.is_file():
            return source.suffix.lower() == ".csv" and "path" in _csv_columns(source) and _manifest_lists_audio(source)
        if not source.is_dir():
            return False
        files = _first_files(source)
        return bool(files) and sum(is_audio(p) for p in files) > len(files) / 2

    def load(self, cfg) -> LabeledData:
        return load_audio_data(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.seed)

    def load_labeled(self, source, model):
        return load_labeled_clips(source, model.classes)

    def collect_inputs(self, inputs, model):
        files = collect_audio_files(inputs)
        return files, files

    def input_key(self, x: str) -> str:
        return file_hash(x)
