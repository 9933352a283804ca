"""map_batches: inference passes over any backbone's inputs (train/batches.py)."""
import os

import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from headstart.train.batches import SMALL_PASS_BATCHES, map_batches


class PidItems(Dataset):
    """Item i is [i, the id of the process that made it]."""

    def __init__(self, inputs):
        self.inputs = inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return torch.tensor([float(self.inputs[i]), float(os.getpid())])


class PidBody:
    def batch_order(self, inputs):
        return list(reversed(range(len(inputs))))  # a preferred order, as text's length sort: rows come back in input order

    def dataset(self, inputs, train):
        return PidItems(inputs)

    def collate(self, batch):
        return default_collate(batch)


def test_a_small_pass_runs_in_this_process_and_a_larger_one_in_workers():
    batch = 4
    small = list(range(SMALL_PASS_BATCHES * batch))
    out = map_batches(lambda x: x, PidBody(), small, batch, torch.device("cpu"), num_workers=1)
    assert out[:, 0].tolist() == small
    assert set(out[:, 1].tolist()) == {float(os.getpid())}  # no worker was started for two batches

    larger = list(range(SMALL_PASS_BATCHES * batch + 1))
    out = map_batches(lambda x: x, PidBody(), larger, batch, torch.device("cpu"), num_workers=1)
    assert out[:, 0].tolist() == larger
    assert float(os.getpid()) not in set(out[:, 1].tolist())  # enough batches to overlap: the worker made them
