"""Loading weight files safely: safetensors, or .pth with `weights_only=True` (never a full unpickle)."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from headstart.errors import UserError


def read_state_dict(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is the user's file
        raise UserError(f"cannot read weights {path}: {str(err).splitlines()[0]} (use .safetensors or a plain .pth state dict)") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} holds no state dict")
    return OrderedDict(state)


def state_digest(module: nn.Module) -> str:
    """Identity of a module's current weights: names and bytes of its state dict (any dtype, 0-dim included)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def load_body_weights(model: nn.Module, state: dict, source: str) -> None:
    """Fill `model` (built with its classifier removed) from `state`.

    Keys that match by name load directly; otherwise keys are mapped in order (another port's naming
    of the same architecture), checking every shape and failing loudly on the first mismatch.
    """
    target = model.state_dict()
    body = OrderedDict((k, v) for k, v in state.items() if k in target)
    if len(body) == len(target):
        model.load_state_dict(body)
        return
    ordered = [(k, v) for k, v in state.items()]
    ordered = ordered[: len(target)]
    if len(ordered) < len(target):
        raise UserError(f"{source}: has {len(state)} tensors, the architecture needs {len(target)}; is it the right model?")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(ordered, target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise UserError(
                f"{source}: tensor {src_key} has shape {tuple(tensor.shape)} but {dst_key} needs {tuple(expected.shape)}; "
                "the weights do not belong to this architecture"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
