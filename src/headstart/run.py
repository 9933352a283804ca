"""A run directory as an object: its model, metrics, evaluation on new data and predictions."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from headstart.data.images import collect_image_files, load_labeled_items
from headstart.errors import UserError
from headstart.evaluate import classification_metrics, per_class_table, predict_proba
from headstart.io_utils import write_json
from headstart.model import TransferModel
from headstart.plots import plot_confusion_matrix
from headstart.predict import top_k_rows


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Run:
    def __init__(self, path: str | Path, model: TransferModel | None = None):
        self.path = Path(path)
        self._model = model

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def model(self) -> TransferModel:
        if self._model is None:
            self._model = TransferModel.load(self.path / "model")
        return self._model

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def metrics(self) -> dict:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def predict_proba(self, paths: list[str], batch_size: int = 64) -> np.ndarray:
        return predict_proba(self.model, paths, batch_size=batch_size, device=_device())

    def predict(self, inputs: list[str] | str, top_k: int = 1) -> list[dict]:
        """Top-k labels with probabilities for files and folders of images."""
        paths = collect_image_files([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
        return top_k_rows(paths, self.predict_proba(paths), self.classes, top_k)

    def evaluate(self, data: str | Path, save: bool = True) -> dict:
        """Metrics on any labeled folder (class folders) or manifest; saved under `eval-<name>/` in the run."""
        items, skipped = load_labeled_items(data, self.classes)
        probs = self.predict_proba([p for p, _ in items])
        metrics = classification_metrics(np.array([y for _, y in items]), probs, self.classes)
        metrics["data"] = str(data)
        metrics["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
        if save and self.path.is_dir():
            folder = self.path / f"eval-{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(data)).strip('_')[-60:]}"
            write_json(folder / "metrics.json", metrics)
            plot_confusion_matrix(metrics["confusion_matrix"], self.classes, folder / "confusion_matrix.png", f"Confusion matrix: {data}")
            metrics["saved_to"] = str(folder)
        return metrics


def load(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "model" / "model.json").is_file() and not (path / "model.json").is_file():
        raise UserError(f"{path} is not a headstart run (no model/model.json); pass the --out folder of a fit")
    run = Run(path if (path / "model").is_dir() else path.parent)
    run.model  # noqa: B018 - load now so a broken run fails here, not at first use
    return run


def summarize_metrics(metrics: dict) -> str:
    return (
        f"accuracy {metrics['accuracy']:.4f}  precision {metrics['precision_macro']:.4f}  "
        f"recall {metrics['recall_macro']:.4f}  F1 {metrics['f1_macro']:.4f}  (n={metrics['n']})\n{per_class_table(metrics)}"
    )
