"""Errors raised by stores.

They are distinct classes so that the API and CLI can map each to a precise
answer (refused, full, conflict, gone) without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "AlreadyStoredError",
    "NameConflictError",
    "PathEscapeError",
    "StagingNotFoundError",
    "StoreError",
    "StoreFullError",
    "UnsafeEntryError",
]


class StoreError(Exception):
    """Base class of every error a store raises on purpose."""


class PathEscapeError(StoreError):
    """A path would leave the store root (symlink, '..', forged staging id); nothing was done."""


class StoreFullError(StoreError):
    """Not enough free space (after the reserve) for the data; nothing was created."""

    def __init__(self, needed: int, available: int, store: str = "") -> None:
        self.needed = needed
        self.available = available
        self.store = store
        where = f" in store {store!r}" if store else ""
        super().__init__(f"need {needed} bytes but only {available} are available{where}")

    def __reduce__(self) -> tuple[type[StoreFullError], tuple[int, int, str]]:
        """Keep the error picklable although ``__init__`` takes structured arguments."""
        return (type(self), (self.needed, self.available, self.store))


class AlreadyStoredError(StoreError):
    """The destination name already exists; neither it nor the staged data was changed."""


class NameConflictError(StoreError):
    """The name clashes with the namespace: a parent is a stored book, or it is not a book."""


class StagingNotFoundError(StoreError):
    """The staging directory or the staged data inside it does not exist."""


class UnsafeEntryError(StoreError):
    """Staged data holds something that must never enter a store (symlink, device, ...)."""
