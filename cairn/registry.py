"""A named registry that built-ins and plugins (an entry-point group) join the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item; plugins from the entry-point group are loaded on first look-up."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._items: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, name: str, item: T) -> None:
        """Add or replace an item."""
        self._items[name] = item

    def unregister(self, name: str) -> None:
        """Remove an item (no error if it is not there)."""
        self._items.pop(name, None)

    @contextlib.contextmanager
    def registered(self, name: str, item: T) -> Iterator[T]:
        """Register ``item`` while the block runs, then restore what was there before."""
        self.names()  # load plugins first, so restoring does not hide one
        previous = self._items.get(name)
        self.register(name, item)
        try:
            yield item
        finally:
            if previous is None:
                self.unregister(name)
            else:
                self.register(name, previous)

    def names(self) -> list[str]:
        """Return every registered name, plugins included, sorted."""
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for entry in entry_points(group=self.group):
                self.register(entry.name, entry.load())
        return sorted(self._items)

    def get(self, name: str) -> T | None:
        """Return the item registered as ``name``, or None."""
        return self._items.get(name) if name in self.names() else None
