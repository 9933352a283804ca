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
