"""Checksums of books in the pinned ``"<algorithm>:<hex>"`` format.

Every checksum the librarian stores, compares or sends is written as
``"<algorithm>:<lower-case hex digest>"``.  Known algorithms are ``xxh3_128``
(the default: fast enough to keep up with storage), ``blake3``, ``sha256`` and
``md5`` (kept for interoperability with the upstream Librarian, whose
``"md5:::<hex>"`` spelling and bare md5 digests are accepted on input only).

A book is a regular file or a directory tree.  A file's checksum is the digest
of its bytes.  A directory's checksum is defined, for every implementation
(local walk, streamed tar upload, remote store), as:

* take every regular file below the directory, identified by its path
  relative to the directory, POSIX separators, no ``.`` or ``..`` parts;
* sort the files by that path (Python ``str`` order, which equals the byte
  order of the UTF-8 encoding);
* feed ``f"{relpath}\\0{size}\\0{file_hexdigest}\\n".encode("utf-8")`` for each
  file into one fresh hasher of the same algorithm, where ``size`` is the
  decimal byte count and ``file_hexdigest`` the file's own digest;
* the directory's checksum is that hasher's hex digest.

So renaming or moving a file changes the checksum, and empty directories
contribute nothing.  File names must be valid UTF-8.  Nothing marks a checksum as a
directory's (an empty directory has the empty file's checksum), so whether a book
is a file or a directory is recorded next to its checksum.  Symlinks, devices,
fifos and sockets are not allowed inside a book (their meaning is not portable
between stores) and raise :class:`UnsupportedEntryError`.  :class:`DirectoryDigest`
is the single implementation of this format.

An empty directory (nothing in it, or only more empty directories) is not a book: it is
almost always a producer's bug, and its checksum would be the empty file's. Uploads and
inbox books are refused with :class:`EmptyBookError` (:func:`refuse_empty_directory`);
hashing itself still takes one, as stored copies are re-verified whatever they hold.

Copying while hashing lives with the movers (``storage.movers.copy``); both read in
:data:`CHUNK_SIZE` chunks into one page-aligned buffer (:func:`new_buffer`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import mmap
import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3
import xxhash

from librarian_dagster.storage.posix import kind
from librarian_dagster.storage.tree import walk

DEFAULT_ALGORITHM = "xxh3_128"
# 1 MiB: fits in L2 between read and hash; smaller is slower, up to 8 MiB is no faster.
CHUNK_SIZE = 1 << 20

#: Called with byte counts as a book is read (hashed, copied, sent): the one progress type.
Progress = Callable[[int], None]
StrPath = str | os.PathLike[str]


class Hasher(Protocol):
    """The incremental-hash interface shared by hashlib, xxhash and blake3."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


_FACTORIES: dict[str, Callable[[], Hasher]] = {
    "xxh3_128": xxhash.xxh3_128,
    "blake3": blake3.blake3,
    "sha256": hashlib.sha256,
    # md5 is for interoperability, not security; say so, or FIPS-mode OpenSSL refuses it.
    "md5": functools.partial(hashlib.md5, usedforsecurity=False),
}
_HEX_LENGTHS = {"xxh3_128": 32, "blake3": 64, "sha256": 64, "md5": 32}
ALGORITHMS: tuple[str, ...] = tuple(_FACTORIES)
_HEX = re.compile(r"[0-9a-fA-F]*")


class ChecksumError(ValueError):
    """A checksum, algorithm or book entry that cannot be hashed or compared."""


class UnsupportedEntryError(ChecksumError):
    """A book contains something other than regular files and directories."""

    def __init__(self, relpath: str, kind: str) -> None:
        super().__init__(f"{relpath!r} is a {kind}; books may hold only regular files and dirs")
        self.relpath = relpath
        self.kind = kind

    def __reduce__(self) -> tuple[type[UnsupportedEntryError], tuple[str, str]]:
        """Pickle by constructor arguments so the error survives process boundaries."""
        return type(self), (self.relpath, self.kind)


class EmptyBookError(ChecksumError):
    """A directory book without a single file in it or below it."""

    def __init__(self, shown: str) -> None:
        super().__init__(
            f"{shown} is an empty directory (no file in it or below it); "
            "an empty directory is not a book"
        )
        self.shown = shown

    def __reduce__(self) -> tuple[type[EmptyBookError], tuple[str]]:
        return type(self), (self.shown,)


def is_empty_directory(path: StrPath) -> bool:
    """Whether ``path`` is a directory holding nothing but (empty) directories.

    Not followed: a symlink is not a directory, and anything that is not a directory (a
    file, a symlink, a fifo) makes the tree non-empty (the others are refused elsewhere).
    Stops at the first such entry. A tree that vanishes meanwhile is not called empty:
    whoever reads it next says what is wrong.
    """
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        return all(entry.is_dir(follow_symlinks=False) for _, entry in walk(path))
    except FileNotFoundError:
        return False


def refuse_empty_directory(path: StrPath, shown: str | None = None) -> None:
    """Raise :class:`EmptyBookError` (naming ``shown``, else ``path``) for an empty dir."""
    if is_empty_directory(path):
        raise EmptyBookError(shown if shown is not None else str(path))


@dataclass(frozen=True)
class Checksum:
    """A validated, canonical checksum: equal values mean equal digests."""

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        """Reject anything non-canonical so every instance can be compared and stored as is."""
        expected = _HEX_LENGTHS.get(self.algorithm)
        if expected is None:
            raise ChecksumError(
                f"unknown algorithm {self.algorithm!r} (known: {', '.join(ALGORITHMS)})"
            )
        if len(self.hexdigest) != expected:
            raise ChecksumError(
                f"{self.algorithm} digest needs {expected} hex digits, got {len(self.hexdigest)}"
            )
        if not _HEX.fullmatch(self.hexdigest):
            raise ChecksumError("digest contains non-hexadecimal characters")
        if self.hexdigest != self.hexdigest.lower():
            raise ChecksumError("digest must be lower-case (Checksum.parse normalises it)")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Read ``alg:hex``, upstream ``alg:::hex`` or a bare md5 digest; the one validator."""
        if not text:
            raise ChecksumError("empty checksum")
        algorithm, sep, hexdigest = text.partition(":")
        if not sep:
            if len(text) != _HEX_LENGTHS["md5"]:
                raise ChecksumError(
                    f"invalid checksum {text!r}: no '<algorithm>:' prefix and not a bare md5"
                )
            algorithm, hexdigest = "md5", text
        elif hexdigest.startswith("::"):
            hexdigest = hexdigest[2:]
        try:
            return cls(algorithm, hexdigest.lower())
        except ChecksumError as err:
            raise ChecksumError(f"invalid checksum {text!r}: {err}") from None


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """Return a fresh incremental hasher, so callers never import hash libraries directly."""
    try:
        return _FACTORIES[algorithm]()
    except KeyError:
        raise ChecksumError(
            f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        ) from None


class DirectoryDigest:
    """Accumulates per-file digests in any order into a directory checksum (see module doc)."""

    def __init__(self, algorithm: str = DEFAULT_ALGORITHM) -> None:
        new_hasher(algorithm)  # fail now on an unknown algorithm, not at result()
        self.algorithm = algorithm
        self._files: dict[str, tuple[int, str]] = {}

    def add(self, relpath: str, size: int, hexdigest: str) -> None:
        """Record one regular file; rejects paths that have more than one spelling."""
        parts = relpath.split("/")
        if not relpath or "\0" in relpath or any(p in ("", ".", "..") for p in parts):
            raise ChecksumError(f"not a normalised relative POSIX path: {relpath!r}")
        if relpath in self._files:
            raise ChecksumError(f"file listed twice: {relpath!r}")
        if size < 0:
            raise ChecksumError(f"negative size {size} for {relpath!r}")
        try:
            relpath.encode("utf-8")
        except UnicodeEncodeError:
            raise ChecksumError(f"file name is not valid UTF-8: {relpath!r}") from None
        self._files[relpath] = (size, Checksum(self.algorithm, hexdigest).hexdigest)

    def result(self) -> Checksum:
        """Hash the sorted file records; call it once every file has been added."""
        outer = new_hasher(self.algorithm)
        for relpath in sorted(self._files):
            size, hexdigest = self._files[relpath]
            outer.update(f"{relpath}\0{size}\0{hexdigest}\n".encode())
        return Checksum(self.algorithm, outer.hexdigest())


class Cancelled(Exception):
    """Stops a reader once the work it serves has failed (see ``pump``'s ``stop``)."""


def new_buffer() -> memoryview:
    """A page-aligned chunk buffer, reused for every chunk and file of a call.

    Alignment matters: the kernel copies file data into a buffer 16 bytes off a 64-byte
    boundary (where malloc often puts a bytearray's data) at under half the speed.
    """
    return memoryview(mmap.mmap(-1, CHUNK_SIZE))


def write_all(out: io.RawIOBase, view: memoryview) -> None:
    """Write a whole chunk; unbuffered writes may be short (e.g. when interrupted)."""
    while view:
        view = view[out.write(view) :]


def pump(
    src: StrPath,
    hasher: Hasher,
    buffer: memoryview,
    progress: Progress | None,
    out: io.RawIOBase | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Stream ``src`` through ``hasher`` (and into ``out`` when copying), reading it once.

    Returns the bytes read: the size the digest actually covers.  Once ``stop`` is set
    (a copy running alongside failed) it raises :class:`Cancelled` at the next chunk.
    """
    size = 0
    with open(src, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):  # doubles readahead on Linux; absent on macOS
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buffer):
            chunk = buffer[:n]  # a view, not a copy
            hasher.update(chunk)
            if out is not None:
                write_all(out, chunk)
            size += n
            if progress is not None:
                progress(n)
            if stop is not None and stop.is_set():
                raise Cancelled
    return size


def hash_file(
    path: StrPath, algorithm: str = DEFAULT_ALGORITHM, progress: Progress | None = None
) -> Checksum:
    """Checksum one file's bytes in a single streaming pass."""
    hasher = new_hasher(algorithm)
    pump(path, hasher, new_buffer(), progress)
    return Checksum(algorithm, hasher.hexdigest())


def scan_tree(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """A directory book's subdirectories (parents first) and (regular file, size) pairs.

    Relative POSIX paths. Scanning completes before anything is hashed, copied or sent, so
    an unsupported entry (symlink, device, fifo, socket) is refused before any side effect.
    """
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    for relpath, entry in walk(root):
        if entry.is_dir(follow_symlinks=False):
            dirs.append(relpath)
        elif entry.is_file(follow_symlinks=False):
            files.append((relpath, entry.stat(follow_symlinks=False).st_size))
        else:
            raise UnsupportedEntryError(relpath, kind(entry.stat(follow_symlinks=False).st_mode))
    return dirs, files


def book_status(path: Path) -> os.stat_result:
    """stat a book: a file or a directory, which may itself be reached via a symlink."""
    status = path.stat()
    if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
        raise UnsupportedEntryError(str(path), kind(status.st_mode))
    return status


def _digest_files(
    src: Path, files: list[tuple[str, int]], algorithm: str, progress: Progress | None
) -> Checksum:
    """Hash a directory book's files, given as scan_tree's (relpath, size) pairs."""
    digest = DirectoryDigest(algorithm)
    buffer = new_buffer()
    for relpath, _ in files:
        hasher = new_hasher(algorithm)
        size = pump(src / relpath, hasher, buffer, progress)
        digest.add(relpath, size, hasher.hexdigest())
    return digest.result()


def hash_path(
    path: StrPath, algorithm: str = DEFAULT_ALGORITHM, progress: Progress | None = None
) -> Checksum:
    """Checksum a book: a file's bytes, or a directory per the module's definition."""
    root = Path(path)
    if not stat.S_ISDIR(book_status(root).st_mode):
        return hash_file(root, algorithm, progress)
    _, files = scan_tree(root)
    return _digest_files(root, files, algorithm, progress)
