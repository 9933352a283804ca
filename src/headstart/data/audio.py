"""Audio data: the image layouts with clips (split folders, one folder of class folders, a CSV manifest).

Clips are decoded with soundfile (wav, flac, ogg, mp3 where libsndfile has it), mixed down to mono and
resampled with scipy's polyphase filter. Unreadable or empty clips are skipped and listed, never crash a
run; an empty class, a single class or no clips at all is one clear error. The small decode / resample /
pad-crop functions here are what the audio backbones' datasets call.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly

from headstart.data.base import AUDIO_EXTENSIONS, LabeledData, Modality, file_hash, label_reader, register_modality, with_task
from headstart.data.files import (FileKind, collect_files, load_file_data, load_labeled_files, manifest_column,
                                 unlabeled_files, unreadable_files)

# --- decoding, reused by the backbones' datasets -------------------------------------------------------------

def decode(path: str) -> tuple[np.ndarray, int]:
    """The whole clip as mono float32 in [-1, 1] (mean of channels) and its sample rate."""
    import soundfile as sf  # here, not at import: libsndfile is needed only once a clip is read

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


# --- layouts (data/files.py) ---------------------------------------------------------------------------------

def _check(path: str) -> tuple[tuple[float, int] | None, str]:
    seconds, rate, reason = check_clip(path)
    return (None if reason else (seconds, rate)), reason


CLIPS = FileKind("clips", frozenset(AUDIO_EXTENSIONS), _check)


def load_audio_data(source: str | Path, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                    label_column: str | None = None, task: str = "auto") -> LabeledData:
    """The layouts of data/files.py with clips; the data summary records their durations and native rate."""
    data, facts = load_file_data(source, CLIPS, "audio", val_fraction, test_fraction, seed, label_column, task)
    data.info.update(clip_summary(facts))
    return data


def clip_summary(facts: list[tuple[float, int]]) -> dict:
    """What the body adapts to, of (seconds, native rate) per clip: durations and the median native rate."""
    seconds, rates = [s for s, _ in facts], [r for _, r in facts]
    return {
        "median_seconds": round(statistics.median(seconds), 3),
        "p95_seconds": round(float(np.percentile(seconds, 95)), 3),
        "max_seconds": round(max(seconds), 3),
        "native_sample_rate": int(statistics.median(rates)),
    }


@register_modality
class Audio(Modality):
    name = "audio"
    options = ("image_size", "clip_seconds", "sample_rate")  # the spectrogram is an image to the body
    default_backbone = "mel-efficientnet_lite0"
    input_noun = "clip"

    def claims(self, source: Path, cfg) -> bool:
        return CLIPS.claims(source)

    def hint(self, source: Path) -> str:
        return CLIPS.hint(source)

    def load(self, cfg) -> LabeledData:
        return with_task(load_audio_data(cfg.data, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.label_column, cfg.task), cfg)

    def load_labeled(self, source, model):
        return load_labeled_files(source, CLIPS, model.classes, label_reader(model), model.task, manifest_column(model))

    def collect_inputs(self, inputs, model):
        files = collect_files(inputs, CLIPS)
        return files, files

    def unreadable(self, inputs):
        return unreadable_files(inputs, CLIPS)

    def unlabeled(self, cfg):
        data, facts = unlabeled_files(cfg, CLIPS, self.name)
        data.info.update(clip_summary(facts))
        return data

    def input_key(self, x: str) -> str:
        return file_hash(x)
