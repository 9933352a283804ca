"""The transferred model: backbone (top removed) + new head; saved as safetensors + JSON, never pickle."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from headstart.backbones import Backbone, rebuild_backbone
from headstart.backbones.weights import file_digest
from headstart.errors import UserError
from headstart.heads import build_head
from headstart.io_utils import temporary_folder, umask_mode
from headstart.tasks import make_task

FORMAT_VERSION = 2


class TransferModel(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, classes: list[str], head_name: str = "linear", task=None,
                 provenance: dict | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.classes, self.head_name = list(classes), head_name
        self.task = task or make_task("classification")
        self.data_options: dict = {}  # how the data was read (text/label columns, separator), for evaluate
        self.provenance = dict(provenance or {})  # how the weights were trained (strategy, LoRA merged, ...): informative only

    @property
    def preprocess(self):
        return self.backbone.preprocess

    @property
    def modality(self) -> str:
        return self.backbone.modality

    def forward(self, x) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def spec(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "modality": self.backbone.modality,
            "task": self.task.name,
            "target_scale": self.task.target_scale,
            "backbone": self.backbone.spec(),
            "head": {"name": self.head_name, "in_dim": self.backbone.feature_dim, "n_out": self.task.n_outputs(self.classes)},
            "classes": self.classes,
            "preprocess": self.preprocess.to_dict(),
            **({"training": self.provenance} if self.provenance else {}),
            "data_options": self.data_options,
        }

    def save(self, folder: str | Path) -> None:
        """Write `model.safetensors` + `model.json` (+ backbone assets) into `folder`, atomically (a temp folder renamed)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "headstart"})
        os.chmod(tmp / "model.safetensors", umask_mode(0o666))  # safetensors writes it private (0600)
        self.backbone.save_assets(tmp)
        (tmp / "model.json").write_text(json.dumps(self.spec(), indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "TransferModel":
        folder = Path(folder)
        if (folder / "model").is_dir():
            folder = folder / "model"
        spec_path, weights_path = folder / "model.json", folder / "model.safetensors"
        if not spec_path.is_file() or not weights_path.is_file():
            raise UserError(f"{folder} is not a headstart model (needs model.json and model.safetensors)")
        spec = _read(spec_path, lambda p: json.loads(p.read_text()))
        state = _read(weights_path, lambda p: load_file(str(p)))
        backbone = rebuild_backbone({**spec["backbone"], "preprocess": spec["preprocess"]}, folder)
        head = build_head(spec["head"]["name"], spec["head"]["in_dim"], spec["head"]["n_out"])
        task = make_task(spec.get("task", "classification"), spec.get("target_scale"))
        model = cls(backbone, head, spec["classes"], spec["head"]["name"], task, spec.get("training"))
        model.data_options = spec.get("data_options", {})
        model.load_state_dict(state)
        backbone.weights_id = f"run-{file_digest(weights_path)}"  # identity for the feature cache when reused
        return model.eval()


def _read(path: Path, read):
    """A model file read, or one clear error naming it: a truncated copy, a disk that filled up."""
    from safetensors import SafetensorError

    try:
        return read(path)
    except (ValueError, OSError, SafetensorError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is damaged ({why}); restore the run folder from a copy, or fit again") from None
