"""Model outputs for raw inputs of any modality, in batches, through the backbone's own preprocessing."""
from __future__ import annotations

import numpy as np
import torch

from headstart.train.batches import map_batches


def predict_outputs(model, inputs: list, batch_size: int = 64, device: str | torch.device = "cpu", num_workers: int = 0,
                    on_batch=None) -> np.ndarray:
    """The task's predictions [N, ...]: class probabilities (classification) or values (regression)."""
    device = torch.device(device)
    model.eval().to(device)
    out = map_batches(model, model.backbone, inputs, batch_size, device, num_workers, on_batch)
    return model.task.predictions(out)
