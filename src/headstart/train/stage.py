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

    def uses_validation(self, ctx: FitContext) -> bool:
        """Did (does) this stage choose anything on the validation split: epochs, weights, a head? Then the fit
        cannot be refit on train + val without losing that choice (fitting.py). True unless a stage knows better."""
        return True
