"""A store's health as ``/ping`` reports it: cheap, and never raising for a broken root."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from librarian_dagster.storage.posix import is_real_dir

if TYPE_CHECKING:
    from librarian_dagster.storage.local_store import LocalStore


@dataclass(frozen=True)
class StoreHealth:
    """What ``/ping`` reports about a store, cheap enough to compute on every call."""

    name: str
    kind: str
    root: str
    exists: bool
    writable: bool
    staging_present: bool
    store_present: bool
    free_bytes: int
    total_bytes: int

    @property
    def ok(self) -> bool:
        """Usable: the layout is there and we can write to it."""
        return self.exists and self.writable and self.staging_present and self.store_present

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return asdict(self)


def usable_bytes(vfs: os.statvfs_result, reserve_bytes: int) -> int:
    """Free space for unprivileged users minus the reserve kept free."""
    return max(0, vfs.f_bavail * vfs.f_frsize - reserve_bytes)


def store_health(store: LocalStore) -> StoreHealth:
    """A snapshot for monitoring; never raises for a missing or broken root."""
    try:
        vfs: os.statvfs_result | None = os.statvfs(store.root)
    except OSError:
        vfs = None
    dirs = (store.root, store.staging_dir, store.store_dir)
    writable = (
        vfs is not None
        and not vfs.f_flag & os.ST_RDONLY
        and all(os.access(d, os.W_OK) for d in dirs)
    )
    free = usable_bytes(vfs, store.reserve_bytes) if vfs else 0
    return StoreHealth(
        name=store.name,
        kind=store.kind,
        root=str(store.root),
        exists=store.root.is_dir(),
        writable=writable,
        staging_present=is_real_dir(store.staging_dir),
        store_present=is_real_dir(store.store_dir),
        free_bytes=free,
        total_bytes=vfs.f_blocks * vfs.f_frsize if vfs else 0,
    )
