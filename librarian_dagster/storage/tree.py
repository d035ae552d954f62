"""The one walk over a book's tree, and the measures taken with it.

``walk`` yields every entry below a directory, parents before their children and in name
order within each directory, without following symlinks. It is lazy: a directory is listed
only when the walk gets to it, so a caller may change a directory it was handed (make it
writable, say) before its entries are read. Hashing, sealing, sizing and removal all walk
with it, so they agree on what a book holds.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path


def scandir_sorted(directory: Path | str) -> list[os.DirEntry[str]]:
    """Directory entries in a stable order, so that scans and errors are reproducible."""
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def walk(top: Path | str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative POSIX path, entry) of everything below ``top``; ``top`` itself excluded.

    ``entry.is_dir(follow_symlinks=False)`` and ``entry.stat(follow_symlinks=False)`` tell
    what each one is; a symlink is yielded as itself, never followed.
    """
    pending: list[tuple[str, str]] = [("", os.fspath(top))]
    while pending:
        prefix, directory = pending.pop()
        deeper = []
        for entry in scandir_sorted(directory):
            relpath = prefix + entry.name
            yield relpath, entry
            if entry.is_dir(follow_symlinks=False):
                deeper.append((relpath + "/", entry.path))
        pending.extend(reversed(deeper))  # popped in name order


def tree_size(path: Path) -> int | None:
    """Bytes of a file or a tree's regular files; None when nothing is there."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size
    return sum(
        entry.stat(follow_symlinks=False).st_size
        for _, entry in walk(path)
        if entry.is_file(follow_symlinks=False)
    )


def newest_mtime_and_size(path: Path) -> tuple[float, int]:
    """The newest mtime of ``path`` or anything below it, and its regular files' bytes."""
    top = os.lstat(path)
    if not stat.S_ISDIR(top.st_mode):
        return top.st_mtime, top.st_size if stat.S_ISREG(top.st_mode) else 0
    newest, size = top.st_mtime, 0
    for _, entry in walk(path):
        try:
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we looked
        newest = max(newest, status.st_mtime)
        if stat.S_ISREG(status.st_mode):
            size += status.st_size
    return newest, size


def drop_cached(path: Path) -> None:
    """Ask the kernel to drop a file's (or a tree's files') clean pages from the page cache,
    so that the next read comes from the disk. Dirty pages stay: sync first."""
    if not hasattr(os, "posix_fadvise"):
        return
    files = (
        [path]
        if not path.is_dir()
        else [Path(entry.path) for _, entry in walk(path) if entry.is_file(follow_symlinks=False)]
    )
    for file in files:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
