"""A name -> object registry whose unknown-name error suggests the closest names."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from memaudit.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered by unique name.

    Examples
    --------
    >>> r = Registry("attack")
    >>> r.add("loss", 1)
    >>> r.get("los")
    Traceback (most recent call last):
    ...
    memaudit.errors.UnknownNameError: unknown attack 'los'; did you mean 'loss'? (known: loss)
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{hint} (known: {', '.join(self._items)})"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
