"""Batches for any modality: the backbone turns raw inputs into tensors, these helpers feed them."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from headstart.train.memory import in_parts


class WithTargets(Dataset):
    """A backbone's dataset of inputs paired with targets: items are (x, y)."""

    def __init__(self, inputs: Dataset, targets: torch.Tensor):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        return self.inputs[i], self.targets[i]


def labeled_loader(backbone, inputs: list, targets: torch.Tensor, train: bool, batch_size: int,
                   sample_weights: torch.Tensor | None = None, **loader_args) -> DataLoader:
    """Shuffled, augmented batches for training (train=True) or ordered eval batches, as (x, y).

    `sample_weights` (training only) draws examples in proportion to them instead of shuffling (--balance sampler).
    """
    def collate(batch):
        return backbone.collate([x for x, _ in batch]), torch.stack([torch.as_tensor(y) for _, y in batch])

    sampler = WeightedRandomSampler(sample_weights, len(inputs)) if train and sample_weights is not None else None
    return DataLoader(WithTargets(backbone.dataset(inputs, train=train), targets), batch_size=batch_size,
                      shuffle=train and sampler is None, sampler=sampler, drop_last=train and len(inputs) > batch_size,
                      collate_fn=collate, **loader_args)


def balanced_sample_weights(targets: torch.Tensor) -> torch.Tensor:
    """1 / (examples of its class) per example: every class is drawn equally often."""
    counts = torch.bincount(targets)
    return 1.0 / counts[targets].double()


def to_device(x, device: torch.device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


# An inference pass of at most this many batches runs in the main process: a worker's start is not repaid when there
# is at most one batch to prepare while the body computes another. 128 cached images, one worker against none (quiet /
# two busy loops beside): 64 px 0.33 s vs 0.14 s / 0.94 vs 0.53 s; 224 px 3.1 vs 2.9 s / 8.8 vs 9.0 s, level.
SMALL_PASS_BATCHES = 2


@torch.no_grad()
def map_batches(fn, backbone, inputs: list, batch_size: int, device: torch.device, num_workers: int = 0, on_batch=None) -> torch.Tensor:
    """`fn(batch)` over every input in eval mode, in the backbone's preferred batch order; rows in input order, float32 CPU.

    The pass leaves torch's random stream where it found it: a DataLoader draws its workers' base seed from it, so
    otherwise a training stage after a feature extraction would shuffle differently from one after a cache hit
    (the same command, run twice, trained two different models). A pass of a few batches starts no worker.
    """
    order = backbone.batch_order(inputs) or list(range(len(inputs)))
    dataset = backbone.dataset([inputs[i] for i in order], train=False)
    if len(inputs) <= SMALL_PASS_BATCHES * batch_size:
        num_workers = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=backbone.collate)
    out = []
    with torch.random.fork_rng(devices=[]):
        for x in loader:
            x = to_device(x, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                y = in_parts(fn, x)  # out of memory: the batch in halves
            out.append(y.float().cpu())
            if on_batch:
                on_batch(len(y))
    if not out:
        return torch.empty(0)
    result = torch.cat(out)
    restored = torch.empty_like(result)
    restored[torch.as_tensor(order)] = result
    return restored
