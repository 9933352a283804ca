"""What the new head predicts: classes (softmax, cross-entropy) or numbers (regression), registered by name.

A task owns everything that differs between them: output size, loss, the convex solve of a linear head,
what a prediction is, metrics and their one-line summary. Regression targets are standardised with the
training mean/std (stored with the model) so one learning rate fits any target scale.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from headstart.evaluate import classification_metrics, per_class_table, regression_metrics
from headstart.registry import Registry
from headstart.train.probe import fit_logistic_head, fit_ridge_head

TASKS: Registry = Registry("task")


@TASKS.register("classification")
class Classification:
    name = "classification"
    score_name = "acc"  # logged as val_acc

    def __init__(self, target_scale: dict | None = None):
        self.target_scale = None

    def n_outputs(self, classes: list[str]) -> int:
        return len(classes)

    def targets(self, values) -> torch.Tensor:
        return torch.as_tensor(list(values), dtype=torch.long)

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == y).float().mean()

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        return {"solver": "logistic regression (scikit-learn lbfgs)", **fit_logistic_head(layer, feats, y, seed)}

    def predictions(self, out: torch.Tensor) -> np.ndarray:
        return torch.softmax(out.float(), dim=1).cpu().numpy()

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        return classification_metrics(np.asarray(y_true), preds, classes)

    def summarize(self, m: dict) -> str:
        return (f"accuracy {m['accuracy']:.4f}  precision {m['precision_macro']:.4f}  "
                f"recall {m['recall_macro']:.4f}  F1 {m['f1_macro']:.4f}  (n={m['n']})\n{per_class_table(m)}")

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        k = max(1, min(top_k, len(classes)))
        order = np.argsort(-preds, axis=1)[:, :k]
        return [{"input": name, "predictions": [{"label": classes[j], "probability": round(float(p[j]), 6)} for j in idx]}
                for name, p, idx in zip(names, preds, order)]


@TASKS.register("regression")
class Regression:
    name = "regression"
    score_name = "mae"

    def __init__(self, target_scale: dict | None = None):
        self.target_scale = target_scale or {"mean": 0.0, "std": 1.0}

    def fit_scale(self, values) -> dict:
        v = np.asarray(list(values), dtype=np.float64)
        self.target_scale = {"mean": float(v.mean()), "std": float(v.std()) or 1.0}
        return self.target_scale

    def n_outputs(self, classes: list[str]) -> int:
        return 1

    def targets(self, values) -> torch.Tensor:
        s = self.target_scale
        return (torch.as_tensor(list(values), dtype=torch.float32) - s["mean"]) / s["std"]

    def loss(self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        # Huber on standardised targets: MSE near the answer, robust to a few wild rows.
        return F.huber_loss(out.float().squeeze(1), y)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.float().squeeze(1) - y).abs().mean() * self.target_scale["std"]

    def solve_head(self, layer, feats: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        return {"solver": "ridge regression (scikit-learn RidgeCV)", **fit_ridge_head(layer, feats, y)}

    def predictions(self, out: torch.Tensor) -> np.ndarray:
        s = self.target_scale
        return out.float().squeeze(1).cpu().numpy() * s["std"] + s["mean"]

    def metrics(self, y_true, preds: np.ndarray, classes: list[str]) -> dict:
        return regression_metrics(np.asarray(y_true, dtype=np.float64), preds, classes[0] if classes else "target")

    def summarize(self, m: dict) -> str:
        return f"R² {m['r2']:.4f}  MAE {m['mae']:.4f}  RMSE {m['rmse']:.4f}  (n={m['n']}, target {m['target']})"

    def rows(self, names: list[str], preds: np.ndarray, classes: list[str], top_k: int) -> list[dict]:
        return [{"input": name, "prediction": round(float(p), 6)} for name, p in zip(names, preds)]


def make_task(name: str, target_scale: dict | None = None):
    return TASKS.get(name)(target_scale)
