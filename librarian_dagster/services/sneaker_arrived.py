"""A drive arrived at the destination: where it is mounted, whose it is, what it carries.

Nothing on a drive is trusted that its identity and manifest do not vouch for: the mount
point must be a real directory given by absolute path, the identity must be readable and
name the same drive, librarian and store as the manifest, and the manifest must be small,
a regular file (not followed through a symlink), JSON, and valid to the last field. Each
refusal is one line that says what is wrong.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage import posix
from librarian_dagster.storage.sneaker import DriveError, DriveIdentity, read_identity
from librarian_dagster.wire.sneaker import (
    DRIVE_STORE_DIR,
    MANIFEST_FILE,
    SneakerManifest,
    parse_manifest,
)

# A manifest of 100,000 books with long names stays far below this.
MAX_MANIFEST_BYTES = 256 << 20


def drive_root(path: str) -> Path:
    """The drive's mount point as given: absolute, a real directory (no symlink)."""
    root = Path(path)
    if not root.is_absolute() or ".." in root.parts:
        raise InvalidRequest(f"drive: {path!r} must be an absolute path")
    try:
        mode = os.lstat(root).st_mode
    except OSError:
        raise NotFound(f"no drive at {path} on the librarian's machine") from None
    if not stat.S_ISDIR(mode):
        raise InvalidRequest(f"drive: {path} is not a directory (give the mount point)")
    return root


def book_on_drive(root: Path, name: str) -> Path:
    """Where a book named in the manifest is on the drive: below the drive's ``store``
    directory, which must itself be a real directory (a symlink there would let a "drive"
    read anything the librarian can), with no symlink on the way (``posix.within``).
    FileNotFoundError if the drive's ``store`` directory is gone (the drive went away);
    StoreError if the name would leave it."""
    books = root / DRIVE_STORE_DIR
    if not stat.S_ISDIR(os.lstat(books).st_mode):
        raise InvalidRequest(f"{books} is not a directory: this is not a librarian's drive")
    return posix.within(books, name)


def drive_still_there(root: Path, drive_uuid: str) -> None:
    """Raise unless the drive mounted at ``root`` is still drive ``drive_uuid``: a book
    missing because the drive went away is not a book missing from the drive."""
    identity = drive_identity(root)
    if identity.drive_uuid != drive_uuid:
        raise Conflict(f"{root} holds {identity.describe()}, not drive {drive_uuid}")


def read_drive_manifest(root: Path) -> SneakerManifest:
    """The manifest written onto the drive; one clear error if it is missing or garbled."""
    path = root / MANIFEST_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(
            f"no manifest on the drive at {root} ({MANIFEST_FILE}); pass --manifest FILE"
        ) from None
    except OSError as error:
        raise InvalidRequest(f"cannot read {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_MANIFEST_BYTES:
            raise InvalidRequest(f"{path} is not a manifest file")
        raw = file.read(MAX_MANIFEST_BYTES + 1)
    try:
        return parse_manifest(raw, str(path))
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


def drive_identity(root: Path) -> DriveIdentity:
    try:
        identity = read_identity(root)
    except DriveError as error:
        raise Conflict(str(error)) from None
    if identity is None:
        raise Conflict(f"{root} has no drive identity: it is not a librarian's drive")
    return identity


def check_drive_against(root: Path, manifest: SneakerManifest, settings: LibrarianSettings) -> None:
    identity = drive_identity(root)
    said = (manifest.drive_uuid, manifest.librarian, manifest.store)
    if said != (identity.drive_uuid, identity.librarian, identity.store):
        raise Conflict(
            f"the manifest is of drive {manifest.drive_uuid} (store {manifest.store!r} at "
            f"{manifest.librarian!r}); {root} holds {identity.describe()}"
        )
    if manifest.librarian == settings.name:
        raise Conflict(f"drive {manifest.drive_uuid} was filled by this librarian")
