"""The transferred model: backbone (top removed) + new head; saved as safetensors + JSON, never pickle."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from headstart.backbones import Backbone, Preprocess, rebuild_backbone
from headstart.errors import UserError
from headstart.heads import build_head

FORMAT_VERSION = 1


class TransferModel(nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module, classes: list[str], head_name: str = "linear"):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.classes, self.head_name = list(classes), head_name

    @property
    def preprocess(self) -> Preprocess:
        return self.backbone.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def spec(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "task": "classification",
            "backbone": self.backbone.spec(),
            "head": {"name": self.head_name, "in_dim": self.backbone.feature_dim, "n_out": len(self.classes)},
            "classes": self.classes,
            "preprocess": self.preprocess.to_dict(),
        }

    def save(self, folder: str | Path) -> None:
        """Write `model.safetensors` + `model.json` into `folder`, atomically (a temp folder renamed)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "headstart"})
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
        spec = json.loads(spec_path.read_text())
        backbone = rebuild_backbone({**spec["backbone"], "preprocess": spec["preprocess"]})
        head = build_head(spec["head"]["name"], spec["head"]["in_dim"], spec["head"]["n_out"])
        model = cls(backbone, head, spec["classes"], spec["head"]["name"])
        model.load_state_dict(load_file(str(weights_path)))
        return model.eval()
