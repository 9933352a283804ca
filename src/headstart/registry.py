"""Name -> factory registries, filled by decorators at import (as timm's `register_model`)."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from headstart.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories. The CLI and the API look things up here, never branch on them."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

