"""Checking and sealing staged data before it is moved into a store.

``scan`` lists a staged book without following anything and refuses whatever is not plain
data (symlinks, devices, fifos, sockets, hard-linked files, other filesystems); ``seal``
then fsyncs every entry and makes it read-only, checking through each open descriptor that
it is still the inode that was scanned, so nothing swapped in meanwhile is ever sealed or
stored.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from librarian_dagster.storage import posix
from librarian_dagster.storage.errors import StagingNotFoundError, UnsafeEntryError
from librarian_dagster.storage.tree import walk

FILE_MODE = 0o444
DIR_MODE = 0o555

# Files sealed per batch: each batch's descriptors stay open from the writeback kick to the
# fsync, so a writeback error is reported by that fsync on the same open file, while a
# tree of 100,000 files never holds more than this many descriptors.
SEAL_BATCH = 256


@dataclass(frozen=True)
class Entry:
    """A path together with the inode it had when it was checked."""

    path: Path
    device: int
    inode: int


@dataclass
class Tree:
    """The regular files and directories (top-down) of checked staged data."""

    files: list[Entry] = field(default_factory=list)
    dirs: list[Entry] = field(default_factory=list)


def lstat_staged_data(path: Path) -> os.stat_result:
    """The staged book itself must exist and be a plain file or directory."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        raise StagingNotFoundError(f"no staged data at {path}") from None
    if not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
        raise UnsafeEntryError(f"staged data {path.name!r} is a {posix.kind(status.st_mode)}")
    return status


def scan(top: Path, top_status: os.stat_result) -> Tree:
    """List the staged tree without following anything, refusing whatever is not plain data."""
    tree = Tree()
    if stat.S_ISREG(top_status.st_mode):
        _check_file(top, top_status, top)
        tree.files.append(Entry(top, top_status.st_dev, top_status.st_ino))
        return tree
    tree.dirs.append(Entry(top, top_status.st_dev, top_status.st_ino))
    for _, entry in walk(top):
        path = Path(entry.path)
        status = entry.stat(follow_symlinks=False)
        if status.st_dev != top_status.st_dev:
            raise UnsafeEntryError(f"{_relative(path, top)!r} is on another filesystem")
        if stat.S_ISDIR(status.st_mode):
            tree.dirs.append(Entry(path, status.st_dev, status.st_ino))
        elif stat.S_ISREG(status.st_mode):
            _check_file(path, status, top)
            tree.files.append(Entry(path, status.st_dev, status.st_ino))
        else:
            kind = posix.kind(status.st_mode)
            raise UnsafeEntryError(f"{_relative(path, top)!r} in staged data is a {kind}")
    return tree


def _check_file(path: Path, status: os.stat_result, top: Path) -> None:
    """A hard-linked file could be changed through its other name after it is stored."""
    if status.st_nlink > 1:
        raise UnsafeEntryError(f"{_relative(path, top)!r} in staged data has other hard links")


def seal(tree: Tree) -> None:
    """fsync and write-protect every entry, files first, directories bottom-up.

    Files go in batches of two passes: write-protect each file of the batch and start its
    writeback, then fsync each on the same descriptor. By the time the second pass gets to
    a file its data is mostly on the way to disk already, instead of every fsync waiting for
    one file's I/O alone (on the development VM, 1,000 freshly written 10 KiB files:
    sealing 0.07-0.09 s instead of 0.13-0.15 s, the whole commit 0.17 s instead of 0.30 s).

    The top directory is only fsynced: it is write-protected after the move (``seal_entry``).
    """
    for first in range(0, len(tree.files), SEAL_BATCH):
        batch: list[int] = []
        try:
            for entry in tree.files[first : first + SEAL_BATCH]:
                fd = _open_entry(entry, posix.FILE_FLAGS)
                batch.append(fd)
                os.fchmod(fd, FILE_MODE)
                posix.start_writeback(fd)
            for fd in batch:
                os.fsync(fd)
        finally:
            for fd in batch:
                os.close(fd)
    for entry in reversed(tree.dirs[1:]):
        seal_entry(entry, DIR_MODE)
    if tree.dirs:
        seal_entry(tree.dirs[0], None)


def _open_entry(entry: Entry, flags: int) -> int:
    """Open an entry, checking it is still the inode we scanned; the caller closes it."""
    try:
        fd = os.open(entry.path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntryError(f"{entry.path} changed while being committed") from exc
        raise
    try:
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino) != (entry.device, entry.inode):
            raise UnsafeEntryError(f"{entry.path} changed while being committed")
    except BaseException:
        os.close(fd)
        raise
    return fd


def seal_entry(entry: Entry, mode: int | None) -> None:
    """chmod (if ``mode``) and fsync one directory, checking it is still the scanned inode."""
    fd = _open_entry(entry, posix.DIR_FLAGS)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _relative(path: Path, top: Path) -> str:
    return (Path(top.name) / path.relative_to(top)).as_posix()
