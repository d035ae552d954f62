"""Client-side movers: look at a local book, then stream it (hashing as it goes) for HTTP.

The shared-filesystem mover is ``storage.movers.copy.copy_and_hash``. For HTTP, a file is sent
as its bytes and a directory as a tar stream generated on the fly, never a temporary archive:
each header and chunk is produced when httpx asks for the next piece of the body. Each
file's digest is taken while its bytes go out and folded into the same ``DirectoryDigest``
that ``hash_path`` uses, so the checksum sent at commit costs no second read of the book.

A book that changes while it is being sent (a file shrinks or grows) raises
``BookChangedError``: what was sent would not be what is on disk, and a tar header already
promised a size.
"""

from __future__ import annotations

import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from librarian_dagster.storage.checksums import (
    CHUNK_SIZE,
    Checksum,
    DirectoryDigest,
    Hasher,
    Progress,
    UnsupportedEntryError,
    new_hasher,
    scan_tree,
)

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


class BookChangedError(OSError):
    """A local book changed while it was being uploaded."""


@dataclass(frozen=True)
class LocalBook:
    """A local file or directory, scanned once before anything is staged.

    ``size`` is what the librarian expects to be told: the file's size, or the sum of the
    regular files of a directory. Scanning refuses symlinks, devices, fifos and sockets
    inside a directory (``UnsupportedEntryError``) so a bad book is refused up front.
    """

    path: Path
    is_directory: bool
    size: int
    dirs: tuple[str, ...] = ()
    files: tuple[tuple[str, int], ...] = ()


def scan_book(path: Path) -> LocalBook:
    """Describe a book; the book itself may be reached through a symlink (like hash_path)."""
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return LocalBook(path, False, path.stat().st_size)
    if not stat.S_ISDIR(mode):
        raise UnsupportedEntryError(str(path), "special file; not a regular file or directory")
    dirs, files = scan_tree(path)
    dirs.sort()
    files.sort()
    return LocalBook(path, True, sum(size for _, size in files), tuple(dirs), tuple(files))


def file_chunks(
    path: Path, size: int, hasher: Hasher, progress: Progress | None = None
) -> Iterator[bytes]:
    """Exactly ``size`` bytes of ``path`` in 1 MiB chunks, each hashed before it is yielded."""
    remaining = size
    with open(path, "rb") as source:
        while remaining:
            chunk = source.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise BookChangedError(f"{path} shrank while it was being uploaded")
            hasher.update(chunk)
            remaining -= len(chunk)
            if progress is not None:
                progress(len(chunk))
            yield chunk
        if source.read(1):
            raise BookChangedError(f"{path} grew while it was being uploaded")


class FileBody:
    """The HTTP body of a file book; ``checksum`` is known once the body has been sent."""

    media_type = "application/octet-stream"

    def __init__(self, book: LocalBook, algorithm: str, progress: Progress | None) -> None:
        self._book = book
        self._hasher = new_hasher(algorithm)
        self._algorithm = algorithm
        self._progress = progress
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        yield from file_chunks(self._book.path, self._book.size, self._hasher, self._progress)
        self._done = True

    def checksum(self) -> Checksum:
        if not self._done:
            raise RuntimeError("the body has not been sent completely")
        return Checksum(self._algorithm, self._hasher.hexdigest())


class TarBody:
    """A directory book as a PAX tar stream of its directories and regular files.

    Member names are relative POSIX paths (no ``./``, nothing absolute); modes are plain
    0755/0644 because the store sets its own read-only modes anyway.
    """

    media_type = "application/x-tar"

    def __init__(self, book: LocalBook, algorithm: str, progress: Progress | None) -> None:
        self._book = book
        self._algorithm = algorithm
        self._digest = DirectoryDigest(algorithm)
        self._progress = progress
        self._done = False

    @staticmethod
    def _header(name: str, kind: bytes, size: int, mode: int, mtime: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size
        info.mode = mode
        info.mtime = mtime
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[bytes]:
        mtime = int(time.time())
        sent = 0
        for relpath in self._book.dirs:
            header = self._header(relpath, tarfile.DIRTYPE, 0, 0o755, mtime)
            sent += len(header)
            yield header
        for relpath, size in self._book.files:
            header = self._header(relpath, tarfile.REGTYPE, size, 0o644, mtime)
            sent += len(header)
            yield header
            hasher = new_hasher(self._algorithm)
            yield from file_chunks(self._book.path / relpath, size, hasher, self._progress)
            padding = b"\0" * (-size % _BLOCK)
            sent += size + len(padding)
            if padding:
                yield padding
            self._digest.add(relpath, size, hasher.hexdigest())
        end = 2 * _BLOCK
        yield b"\0" * (end + (-(sent + end) % _RECORD))
        self._done = True

    def checksum(self) -> Checksum:
        if not self._done:
            raise RuntimeError("the body has not been sent completely")
        return self._digest.result()


def body_for(
    book: LocalBook, algorithm: str, progress: Progress | None = None
) -> FileBody | TarBody:
    """The streaming HTTP body for a book: its bytes, or a tar of its tree."""
    return (TarBody if book.is_directory else FileBody)(book, algorithm, progress)
