"""Setting a bad stored copy aside so that a verified good one can take its place.

A repair (``services.integrity_repair``) has a re-sent copy verified in staging; the bad
copy still occupies the book's path, and ``LocalStore.commit`` never overwrites. The bad
copy is renamed into ``<root>/quarantine/<random>/copy`` (same file system: a rename, no
bytes copied), the good one is committed, and only once the catalogue has recorded the
repair is the set-aside copy removed. A crash in between leaves the bad copy in
quarantine, never in the store area, and never the book's only copy unrecorded: the
staged good copy is still in staging until its commit.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

from librarian_dagster.storage import posix
from librarian_dagster.storage.errors import NameConflictError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.names import validate_name

QUARANTINE_DIRNAME = "quarantine"


def set_aside(store: LocalStore, name: str, is_directory: bool) -> Path | None:
    """Move the stored copy of ``name`` into quarantine; its new directory, or None if
    nothing is stored under ``name``.

    Only a book of the kind the catalogue records: a writable directory there is a
    namespace (other books live in it), a file where a directory book was is not this
    book; either is refused (``NameConflictError``) and nothing moves.
    """
    name = validate_name(name)
    source = posix.within(store.store_dir, name)
    try:
        found = os.lstat(source)
    except FileNotFoundError:
        return None
    kind_found = "directory" if stat.S_ISDIR(found.st_mode) else "file"
    if stat.S_ISDIR(found.st_mode) != is_directory or not (
        stat.S_ISREG(found.st_mode) or stat.S_ISDIR(found.st_mode)
    ):
        raise NameConflictError(f"{name!r} in store {store.name!r} is a {kind_found}, not the book")
    if stat.S_ISDIR(found.st_mode) and found.st_mode & stat.S_IWUSR:
        raise NameConflictError(f"{name!r} in store {store.name!r} is a namespace directory")
    holder = store.root / QUARANTINE_DIRNAME / uuid.uuid4().hex
    holder.mkdir(parents=True, mode=0o700)
    if stat.S_ISDIR(found.st_mode):
        # Moving a directory to another parent rewrites its '..': it must be writable.
        os.chmod(source, stat.S_IMODE(found.st_mode) | stat.S_IWUSR)
    os.rename(source, holder / "copy")
    posix.fsync_dir(source.parent)
    posix.fsync_dir(holder)
    return holder


def put_back(store: LocalStore, name: str, holder: Path) -> None:
    """Undo ``set_aside`` (the good copy could not be committed): the bad copy returns to
    its place, out of service as the catalogue says, rather than lie unrecorded."""
    destination = posix.within(store.store_dir, validate_name(name))
    posix.rename_noreplace(holder / "copy", destination)
    posix.fsync_dir(destination.parent)
    posix.remove_tree(holder)


def remove_set_aside(holder: Path) -> None:
    """Remove a quarantined copy (read-only or not) once its replacement is recorded."""
    posix.remove_tree(holder)
