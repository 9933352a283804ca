"""Strategies: named recipes that decide what trains when, at which rate, on cached features or raw inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from headstart.registry import Registry


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    stages: Callable[[], list]  # () -> [Stage, ...], run in order

    def keeps_body(self) -> bool:
        """Whether every stage trains the head on the frozen body's cached features (the body is never changed)."""
        from headstart.train.stages import HeadOnFeatures

        return all(type(s) is HeadOnFeatures for s in self.stages())


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(name: str, summary: str):
    def add(build: Callable[[], list]) -> Callable[[], list]:
        STRATEGIES.register(name)(Strategy(name, summary, build))
        return build

    return add
