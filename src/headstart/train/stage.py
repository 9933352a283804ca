"""The base of every stage, in a module of its own so strategies can subclass it without importing the engine."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headstart.train.context import FitContext


class Stage:
    name = "stage"

    def cost(self, ctx: FitContext) -> float:
        raise NotImplementedError

    def run(self, ctx: FitContext) -> None:
        raise NotImplementedError
