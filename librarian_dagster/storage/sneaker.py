"""SneakerNet on disk: the identity file that says which librarian's which store a drive is.

A sneaker store's root is the mount point of a removable drive. Drives are swapped, shipped
and plugged into the wrong slot; a librarian that wrote into whatever is mounted there would
mix two drives' books, and one that wrote into an empty mount point would fill the host's
own disk. So the drive carries ``.librarian-drive.json`` at its root (format, drive UUID,
librarian, store, created), written once when the store is provisioned, and nothing is
written to a root that is not a mount point (unless the store says ``require_mount =
false``: a directory standing in for a drive) or whose identity is missing, garbled or
someone else's. The root itself is never created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from librarian_dagster.storage import posix
from librarian_dagster.storage.errors import StoreError

IDENTITY_FILE = ".librarian-drive.json"
IDENTITY_FORMAT = 1
MAX_IDENTITY_BYTES = 4096
# What a freshly formatted drive may hold besides nothing: mkfs.ext4's lost+found, and what
# Windows and macOS leave on a drive they have seen.
FRESH_DRIVE_ENTRIES = frozenset(
    {"lost+found", "System Volume Information", "$RECYCLE.BIN", ".Trashes", ".fseventsd"}
)
# A temporary identity an interrupted provisioning left (``posix.write_new_file``'s name).
_LEFTOVER = re.compile(rf"^\.tmp-\d+-[0-9a-f]+-{re.escape(IDENTITY_FILE)}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class DriveError(StoreError):
    """The drive at a sneaker store's root is absent, unknown or another store's."""


class DriveAway(DriveError):
    """No drive is mounted at a sneaker store's root (shipped, or not plugged in yet)."""


class DriveBusy(DriveError):
    """Another process is writing to this drive (a fill holds its lock)."""


@dataclass(frozen=True)
class DriveIdentity:
    format: int
    drive_uuid: str
    librarian: str
    store: str
    created: str

    def describe(self) -> str:
        return f"drive {self.drive_uuid} of store {self.store!r} at librarian {self.librarian!r}"


def require_drive_root(root: Path, store: str, *, require_mount: bool = True) -> None:
    """DriveError unless a drive is mounted at ``root`` (a real directory, a mount point)."""
    if root.is_symlink():
        raise DriveError(f"store {store!r}: {root} is a symlink; give the mount point itself")
    if not root.is_dir():
        raise DriveAway(f"store {store!r}: no drive is mounted at {root}")
    if require_mount and not os.path.ismount(root):
        raise DriveAway(
            f"store {store!r}: no drive is mounted at {root} (it is not a mount point; "
            "require_mount = false lets a plain directory stand in for a drive)"
        )


def read_identity(root: Path) -> DriveIdentity | None:
    """The identity at ``root``, None if there is none; DriveError if it is not one.

    Read without following a symlink or blocking on a FIFO, and only a small regular file.
    """
    path = root / IDENTITY_FILE
    try:
        fd = os.open(path, posix.FILE_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DriveError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_IDENTITY_BYTES:
            raise DriveError(f"{path} is not a librarian drive identity (not a small file)")
        raw = os.read(fd, MAX_IDENTITY_BYTES + 1)
    except OSError as error:
        raise DriveError(f"cannot read {path}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    return _parse(path, raw)


def _parse(path: Path, raw: bytes) -> DriveIdentity:
    garbled = DriveError(f"{path} is not a librarian drive identity (garbled)")
    try:
        data = json.loads(raw)
    except ValueError:
        raise garbled from None
    if not isinstance(data, dict):
        raise garbled
    version = data.get("format")
    if type(version) is not int:  # a bool is an int to Python, not to us
        raise garbled
    if version != IDENTITY_FORMAT:
        raise DriveError(f"{path} has format {version}; this librarian reads {IDENTITY_FORMAT}")
    if set(data) != {field.name for field in dataclasses.fields(DriveIdentity)}:
        raise garbled
    texts = {key: value for key, value in data.items() if key != "format"}
    if not all(isinstance(value, str) for value in texts.values()):
        raise garbled
    try:
        canonical = str(uuid.UUID(data["drive_uuid"]))
        datetime.fromisoformat(data["created"])
    except ValueError:
        raise garbled from None
    names = set(texts) - {"drive_uuid", "created"}  # whose drive: librarian and store
    if canonical != data["drive_uuid"] or not all(_NAME.match(texts[key]) for key in names):
        raise garbled
    return DriveIdentity(**data)


def check_drive(
    root: Path, librarian: str, store: str, *, require_mount: bool = True
) -> DriveIdentity:
    """The identity of the drive at ``root`` if it is this librarian's ``store``; else why not."""
    require_drive_root(root, store, require_mount=require_mount)
    identity = read_identity(root)
    if identity is None:
        raise DriveError(
            f"store {store!r}: the drive at {root} has no identity ({IDENTITY_FILE}); "
            "an empty drive is provisioned by `librarian init`"
        )
    if (identity.librarian, identity.store) != (librarian, store):
        whose = (
            f"store {identity.store!r}'s"
            if identity.librarian == librarian
            else f"librarian {identity.librarian!r}'s"
        )
        raise DriveError(
            f"store {store!r}: {root} holds {whose} drive ({identity.describe()}); "
            "nothing was written to it"
        )
    return identity


def provision_drive(
    root: Path, librarian: str, store: str, *, require_mount: bool = True
) -> tuple[DriveIdentity, bool]:
    """Give the empty drive at ``root`` an identity for ``store``; (identity, written now).

    Idempotent: a drive that already is this store's is left alone. A root that is no
    mounted drive, another store's, or holds anything but a fresh file system's entries is
    refused, and nothing is written to it. A temporary identity left by an interrupted
    provisioning is removed.
    """
    require_drive_root(root, store, require_mount=require_mount)
    if read_identity(root) is not None:
        return check_drive(root, librarian, store, require_mount=require_mount), False
    try:
        entries = set(os.listdir(root))
        leftovers = {name for name in entries if _LEFTOVER.match(name)}
        found = sorted(entries - leftovers - FRESH_DRIVE_ENTRIES)
        if found:
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            raise DriveError(
                f"store {store!r}: {root} is not empty ({', '.join(found[:3])}{more}) and has "
                "no drive identity; refusing to take it over: use an empty drive"
            )
        for name in leftovers:  # only once the drive is known to be ours to provision
            os.unlink(root / name)
        identity = DriveIdentity(
            format=IDENTITY_FORMAT,
            drive_uuid=str(uuid.uuid4()),
            librarian=librarian,
            store=store,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        text = json.dumps(asdict(identity), indent=2) + "\n"
        written = posix.write_new_file(root / IDENTITY_FILE, text.encode())
    except OSError as error:
        raise DriveError(
            f"store {store!r}: cannot write the drive identity at {root}: {error.strerror or error}"
        ) from None
    if not written:
        return check_drive(root, librarian, store, require_mount=require_mount), False
    return identity, True


@contextlib.contextmanager
def drive_lock(directory: Path, store: str) -> Iterator[None]:
    """Hold the drive's writer lock (``flock`` on ``directory``, its staging area) or raise
    :class:`DriveBusy`.

    The kernel drops the lock when its holder dies, even by kill -9, so a lock is never
    left behind; whoever holds it may treat everything in ``directory`` as leftovers.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise DriveError(
            f"store {store!r}: cannot lock the drive's staging area {directory} "
            f"({error.strerror}); is the drive provisioned (librarian init)?"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DriveBusy(f"store {store!r}: another fill is writing to the drive") from None
        yield
    finally:
        os.close(fd)
