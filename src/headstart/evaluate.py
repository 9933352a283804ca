"""Metrics (scikit-learn): accuracy, macro precision/recall/F1, per-class table, confusion matrix."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch.utils.data import DataLoader

from headstart.data.images import ImageDataset, eval_transform


@torch.no_grad()
def predict_proba(model, paths: list[str], batch_size: int = 64, device: str | torch.device = "cpu", num_workers: int = 0, on_batch=None) -> np.ndarray:
    """Class probabilities [N, C] with the model's deterministic eval transform, in float32."""
    model.eval().to(device)
    loader = DataLoader(ImageDataset([(p, 0) for p in paths], eval_transform(model.preprocess)), batch_size=batch_size, num_workers=num_workers)
    out = []
    for x, _ in loader:
        out.append(torch.softmax(model(x.to(device)).float(), dim=1).cpu())
        if on_batch:
            on_batch(len(x))
    return torch.cat(out).numpy()


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    y_pred = probs.argmax(1)
    labels = list(range(len(classes)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        ],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": classes,
    }


def per_class_table(metrics: dict) -> str:
    width = max(8, *(len(row["class"]) for row in metrics["per_class"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for row in metrics["per_class"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}")
    return "\n".join(lines)
