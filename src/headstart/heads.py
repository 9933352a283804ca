"""New tops for a cut backbone, registered by name (`--head linear|mlp`)."""
from __future__ import annotations

import warnings

from torch import nn

from headstart.registry import Registry

HEADS: Registry = Registry("head")


@HEADS.register("linear")
def linear_head(in_dim: int, n_out: int, dropout: float = 0.0) -> nn.Module:
    layers = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(in_dim, n_out))


@HEADS.register("mlp")
def mlp_head(in_dim: int, n_out: int, dropout: float = 0.2, hidden: int = 512) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))


def sole_linear_layer(head: nn.Module) -> nn.Linear | None:
    """The head's only trainable layer when it is a plain linear map (then it can be solved, not trained)."""
    layers = [m for m in head.modules() if len(list(m.parameters(recurse=False)))]
    return layers[0] if len(layers) == 1 and isinstance(layers[0], nn.Linear) else None


def build_head(name: str, in_dim: int, n_out: int) -> nn.Module:
    if n_out == 0:  # a body without a task (`pretrain`): no outputs, nothing to initialise (torch warns it is a no-op)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return HEADS.get(name)(in_dim, n_out)
    return HEADS.get(name)(in_dim, n_out)
