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

    def accepts(self, backbone) -> bool:
        """Whether this stage can run on this body (an untrained one may not do): `tune` leaves strategies with a stage
        that refuses it out of its search."""
        return True

    def uses_validation(self, ctx: FitContext) -> bool:
        """Did (does) this stage choose anything on the validation split: epochs, weights, a head? Then the fit
        cannot be refit on train + val without losing that choice (fitting.py). True unless a stage knows better."""
        return True

    def decide_on_validation(self, ctx: FitContext) -> None:
        """Choices this stage makes from the validation split before it trains (the augmentation check). A fit that
        folds validation into training before any stage runs (fitting.py, a refit with a test split) calls it while
        the split still exists; `run` calls it too, so it must be idempotent."""

    def expand(self, ctx: FitContext) -> list[Stage]:
        """The stages to run in this one's place: itself, or what it decides (auto measures and picks a strategy)."""
        return [self]


def note_score(note: dict) -> tuple[str, float] | None:
    """The validation score a training stage's note records beside its loss (`best_val_acc`: ("acc", 0.96); regression's
    `best_val_mae`, lower is better), or None (a stage that records only its loss)."""
    return next(((k[len("best_val_"):], v) for k, v in note.items() if k.startswith("best_val_") and k != "best_val_loss"), None)
