"""A small manifest beside every stored book, so that a lost catalogue can be rebuilt.

For the book ``2026/12/07/obs.uvh5`` stored at ``<store>/2026/12/07/obs.uvh5`` the sidecar
is ``<store>/2026/12/07/obs.uvh5,librarian.json``: in the store area, beside the book and
outside its own directory (a directory book's checksum is never touched by it). A comma is
refused in every book name (``storage.names``), so no book, and no directory a book lives
in, can ever be called like a sidecar: the walk that rebuilds a catalogue tells books,
namespace directories and sidecars apart by name, not by guessing from what is on disk.

A sidecar holds what the catalogue's File row holds (name, checksum, size, is_directory,
created, uploader, source) and a format version. It is written atomically (a temporary
file, fsync, rename) after the book is in place and before the catalogue commit that
records it, so a committed book always has one; writing it again is harmless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from librarian_dagster.storage import posix
from librarian_dagster.storage.local_store import SIDECAR_SUFFIX, LocalStore
from librarian_dagster.storage.names import InvalidNameError, validate_name

FORMAT = "librarian-sidecar"
VERSION = 1
MAX_SIDECAR_BYTES = 64 * 1024


class SidecarError(ValueError):
    """A sidecar that cannot be read as one (the message says which and why)."""


@dataclass(frozen=True)
class Sidecar:
    name: str
    checksum: str
    size: int
    is_directory: bool
    created: datetime
    uploader: str
    source: str

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "version": VERSION, **asdict(self)}
        body["created"] = self.created.isoformat()
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"


def sidecar_path(store: LocalStore, name: str) -> Path:
    book = posix.within(store.store_dir, validate_name(name))
    return book.with_name(book.name + SIDECAR_SUFFIX)


def write_sidecar(store: LocalStore, sidecar: Sidecar) -> Path:
    path = sidecar_path(store, sidecar.name)
    posix.write_new_file(path, sidecar.to_json(), replace=True)
    return path


def read_sidecar(path: Path) -> Sidecar:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SIDECAR_BYTES + 1)
    except OSError as error:
        raise SidecarError(f"{path}: {error.strerror or error}") from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"{path}: over {MAX_SIDECAR_BYTES} bytes: not a sidecar")
    try:
        body = json.loads(raw)
        if body.get("format") != FORMAT or body.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION}")
        sidecar = Sidecar(
            name=validate_name(str(body["name"])),
            checksum=str(body["checksum"]),
            size=int(body["size"]),
            is_directory=bool(body["is_directory"]),
            created=datetime.fromisoformat(str(body["created"])),
            uploader=str(body["uploader"]),
            source=str(body["source"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, InvalidNameError) as error:
        raise SidecarError(f"{path}: {error}") from None
    return sidecar


def remove_sidecar(store: LocalStore, name: str) -> None:
    posix.remove_if_present(sidecar_path(store, name))


@dataclass(frozen=True)
class Entry:
    """What a walk of a store area found: a book, or a sidecar (with the name it is for)."""

    name: str
    path: Path
    sidecar: bool


def walk(store: LocalStore) -> Iterator[Entry]:
    """Every book and sidecar under the store area, without descending into books.

    A directory is a namespace (descended into) unless it is a book: it has a sidecar
    beside it, or it is sealed read-only as stored books are (a book from before
    sidecars). Symlinks and other odd entries are reported as books, to be looked at.
    """
    stack = [(store.store_dir, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except FileNotFoundError:
            continue
        names = {entry.name for entry in entries}
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if entry.name.endswith(SIDECAR_SUFFIX):
                # A comma is in no book name: this is a sidecar, or one being written.
                if not posix.is_temporary(entry.name):
                    yield Entry(relative.removesuffix(SIDECAR_SUFFIX), Path(entry.path), True)
            elif entry.is_dir(follow_symlinks=False) and _is_namespace(entry, names):
                stack.append((Path(entry.path), f"{relative}/"))
            else:
                yield Entry(relative, Path(entry.path), False)


def _is_namespace(entry: os.DirEntry[str], siblings: set[str]) -> bool:
    if entry.name + SIDECAR_SUFFIX in siblings:
        return False
    return bool(entry.stat(follow_symlinks=False).st_mode & 0o200)
