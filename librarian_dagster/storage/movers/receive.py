"""Write a byte stream into staging: a file, or a tar stream of a directory.

Used by ``PUT /api/v2/uploads/{id}/content`` for clients without a shared filesystem. The
body is never held in memory: it is read in 1 MiB chunks, hashed while written, and cut off as
soon as it exceeds the declared size (a lying client cannot fill the disk). A tar stream is
unpacked on the fly; only regular files and directories with safe relative names are
accepted, and the result's checksum is computed with the same ``DirectoryDigest`` as
``hash_path`` so no second read is needed to know it.

Bytes are not all a tar can cost: a "0-byte" stream of 20,000 empty directories writes
80 MB of metadata. ``EntryLimits`` caps the entries (files and directories, also the parent
directories a member's path implies) of one book, lets
each entry beyond the first ``free_entries`` cost ``min_bytes_per_entry`` of the declared
size, and asks ``has_room`` every ``ROOM_CHECK_EVERY`` entries whether the filesystem still
has room beyond its reserve.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from librarian_dagster.storage.checksums import (
    CHUNK_SIZE,
    Checksum,
    DirectoryDigest,
    new_hasher,
)
from librarian_dagster.storage.names import InvalidNameError, validate_name

FILE_MEDIA_TYPE = "application/octet-stream"
TAR_MEDIA_TYPE = "application/x-tar"


class ReceiveError(ValueError):
    """The stream is not acceptable (too long, not a tar, unsafe member); nothing is kept."""


@dataclass(frozen=True)
class Received:
    size: int
    checksum: Checksum


ROOM_CHECK_EVERY = 1024


@dataclass(frozen=True)
class EntryLimits:
    max_entries: int = 1_000_000
    min_bytes_per_entry: int = 512
    free_entries: int = 1000
    has_room: Callable[[], bool] | None = None

    def allowed(self, declared_size: int) -> int:
        """Entries a book of this declared size may hold."""
        if self.min_bytes_per_entry <= 0:
            return self.max_entries
        return min(self.max_entries, self.free_entries + declared_size // self.min_bytes_per_entry)


class _Entries:
    """Counts the entries of a tar stream against ``EntryLimits``."""

    def __init__(self, limits: EntryLimits, declared_size: int) -> None:
        self._limits = limits
        self._allowed = limits.allowed(declared_size)
        self._declared = declared_size
        self.count = 0

    def take(self) -> None:
        self.count += 1
        if self.count > self._allowed:
            raise ReceiveError(
                f"more than {self._allowed} entries (files and directories) for a declared "
                f"size of {self._declared} bytes: at most {self._limits.max_entries}, and "
                f"each beyond the first {self._limits.free_entries} needs "
                f"{self._limits.min_bytes_per_entry} declared bytes"
            )
        has_room = self._limits.has_room
        if self.count % ROOM_CHECK_EVERY == 0 and has_room is not None and not has_room():
            raise ReceiveError("the store ran out of room while the directory was unpacked")


class _Budget:
    """Counts bytes written and refuses to go past the declared size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ReceiveError(f"more bytes than the declared size ({self.limit})")


def _copy(source: BinaryIO, destination: Path, algorithm: str, budget: _Budget) -> tuple[int, str]:
    """Copy ``source`` into a new file while hashing it; returns (size, hexdigest)."""
    hasher = new_hasher(algorithm)
    size = 0
    with open(destination, "xb", buffering=0) as out:
        while True:
            chunk = source.read(CHUNK_SIZE)
            if not chunk:
                break
            n = len(chunk)
            budget.take(n)
            hasher.update(chunk)
            written = 0
            while written < n:
                written += out.write(chunk[written:]) or 0
            size += n
        os.fsync(out.fileno())
    return size, hasher.hexdigest()


def receive_file(stream: BinaryIO, destination: Path, algorithm: str, limit: int) -> Received:
    """Write one file at ``destination`` (must not exist) from ``stream``."""
    size, hexdigest = _copy(stream, destination, algorithm, _Budget(limit))
    return Received(size, Checksum(algorithm, hexdigest))


def _member_path(name: str) -> str | None:
    """The safe relative path of a tar member (None for the top directory itself)."""
    cleaned = name.removeprefix("./").rstrip("/")
    if cleaned in ("", "."):
        return None
    try:
        return validate_name(cleaned)
    except InvalidNameError as error:
        raise ReceiveError(f"unsafe path in tar stream {name!r}: {error}") from None


def _make_dirs(destination: Path, relpath: str, entries: _Entries, created: set[str]) -> None:
    """Create ``relpath`` and its missing parents below ``destination``, each an entry."""
    parts = relpath.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        if prefix in created:
            continue
        entries.take()
        (destination / prefix).mkdir(mode=0o755, exist_ok=True)
        created.add(prefix)


def receive_tar(
    stream: BinaryIO,
    destination: Path,
    algorithm: str,
    limit: int,
    entry_limits: EntryLimits | None = None,
) -> Received:
    """Unpack a tar stream as the directory ``destination`` (must not exist)."""
    budget = _Budget(limit)
    entries = _Entries(entry_limits or EntryLimits(), limit)
    created: set[str] = set()
    digest = DirectoryDigest(algorithm)
    os.mkdir(destination, 0o755)
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 (closed below)
    except tarfile.TarError as error:
        raise ReceiveError(f"not a tar stream: {error}") from None
    try:
        for member in archive:
            relpath = _member_path(member.name)
            if relpath is None:
                continue
            target = destination / relpath
            if member.isdir():
                _make_dirs(destination, relpath, entries, created)
            elif member.isreg():
                parent = relpath.rpartition("/")[0]
                if parent:
                    _make_dirs(destination, parent, entries, created)
                entries.take()
                source = archive.extractfile(member)
                assert source is not None  # a regular member always has a file object
                size, hexdigest = _copy(source, target, algorithm, budget)
                digest.add(relpath, size, hexdigest)
            else:
                raise ReceiveError(f"tar member {member.name!r} is not a regular file or directory")
    except tarfile.TarError as error:
        raise ReceiveError(f"broken tar stream: {error}") from None
    except (FileExistsError, NotADirectoryError) as error:
        raise ReceiveError(f"tar stream repeats or nests a path: {error.filename}") from None
    finally:
        archive.close()
    return Received(budget.used, digest.result())
