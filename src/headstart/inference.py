"""Model outputs for raw inputs of any modality, in batches, through the backbone's own preprocessing."""
from __future__ import annotations

import numpy as np
import torch

from headstart.train.batches import map_batches


def predict_outputs(model, inputs: list, batch_size: int = 64, device: str | torch.device = "cpu", num_workers: int = 0,
                    on_batch=None, runner=None) -> np.ndarray:
    """The task's predictions [N, ...]: class probabilities (classification) or values (regression).

    `runner` (an `OnnxRunner`) computes them from the same preprocessed batches instead of PyTorch; an exported
    graph already ends in the task's post-processing.
    """
    if runner is not None:
        return map_batches(runner, model.backbone, inputs, batch_size, torch.device("cpu"), num_workers, on_batch).numpy()
    device = torch.device(device)
    model.eval().to(device)
    out = map_batches(model, model.backbone, inputs, batch_size, device, num_workers, on_batch)
    return model.task.predictions(out)


def features_and_outputs(model, inputs: list, batch_size: int = 64, device: str | torch.device = "cpu",
                         num_workers: int = 0, on_batch=None) -> tuple[torch.Tensor, np.ndarray]:
    """The body's pooled features [N, D] (CPU float32) and the task's predictions from them, in one pass."""
    device = torch.device(device)
    model.eval().to(device)
    features = map_batches(model.backbone.forward_features, model.backbone, inputs, batch_size, device, num_workers, on_batch)
    return features, outputs_of_features(model, features)


def outputs_of_features(model, features: torch.Tensor) -> np.ndarray:
    """The head and the task's post-processing on features already computed (on the CPU: a head is small)."""
    with torch.no_grad():
        return model.task.predictions(model.head.cpu()(features))
