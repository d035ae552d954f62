"""SneakerNet on disk: the identity file that says which librarian's which store a drive is.

A sneaker store's root is the mount point of a removable drive. Drives are swapped, shipped
and plugged into the wrong slot; a librarian that wrote into whatever is mounted there would
mix two drives' books or fill the host's own disk under an empty mount point. So the drive
carries ``.librarian-drive.json`` at its root (format, drive UUID, librarian, store,
created), written once when the store is provisioned, and nothing is written to a root
whose identity is missing, garbled or someone else's. The root itself is never created:
a missing root means no drive is mounted.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from librarian_dagster.storage import posix
from librarian_dagster.storage.errors import StoreError

IDENTITY_FILE = ".librarian-drive.json"
IDENTITY_FORMAT = 1
# What a freshly formatted drive may hold besides nothing (ext4 makes lost+found).
FRESH_DRIVE_ENTRIES = frozenset({"lost+found"})


class DriveError(StoreError):
    """The drive at a sneaker store's root is absent, unknown or another store's."""


@dataclass(frozen=True)
class DriveIdentity:
    format: int
    drive_uuid: str
    librarian: str
    store: str
    created: str

    def describe(self) -> str:
        return f"drive {self.drive_uuid} of store {self.store!r} at librarian {self.librarian!r}"


def read_identity(root: Path) -> DriveIdentity | None:
    """The identity at ``root``, None if there is none; DriveError if it is not one."""
    path = root / IDENTITY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DriveError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = json.loads(text)
        identity = DriveIdentity(**data)
    except (ValueError, TypeError):
        raise DriveError(f"{path} is not a librarian drive identity (garbled)") from None
    if identity.format != IDENTITY_FORMAT:
        raise DriveError(f"{path} has format {identity.format!r}; this librarian reads 1")
    return identity


def check_drive(root: Path, librarian: str, store: str) -> DriveIdentity:
    """The identity of the drive at ``root`` if it is this librarian's ``store``; else why not."""
    if not root.is_dir():
        raise DriveError(f"store {store!r}: no drive is mounted at {root}")
    identity = read_identity(root)
    if identity is None:
        raise DriveError(
            f"store {store!r}: {root} has no drive identity ({IDENTITY_FILE}); "
            "provision the drive with `librarian init`"
        )
    if (identity.librarian, identity.store) != (librarian, store):
        raise DriveError(
            f"store {store!r}: {root} holds {identity.describe()}, not this librarian's "
            f"({librarian!r}); nothing was written to it"
        )
    return identity


def provision_drive(root: Path, librarian: str, store: str) -> tuple[DriveIdentity, bool]:
    """Give the empty drive at ``root`` an identity for ``store``; (identity, written now).

    Idempotent: a drive that already is this store's is left alone. A root that is missing,
    another store's, or holds anything but a fresh file system's entries is refused, and
    nothing is written to it.
    """
    if not root.is_dir():
        raise DriveError(
            f"store {store!r}: no drive is mounted at {root} (its root is never created)"
        )
    if read_identity(root) is not None:
        return check_drive(root, librarian, store), False
    found = sorted(set(os.listdir(root)) - FRESH_DRIVE_ENTRIES)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise DriveError(
            f"store {store!r}: {root} is not empty ({shown}) and has no drive identity; "
            "refusing to take it over: use an empty drive"
        )
    identity = DriveIdentity(
        format=IDENTITY_FORMAT,
        drive_uuid=str(uuid.uuid4()),
        librarian=librarian,
        store=store,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    text = json.dumps(asdict(identity), indent=2) + "\n"
    if not posix.write_new_file(root / IDENTITY_FILE, text.encode()):
        return check_drive(root, librarian, store), False  # provisioned meanwhile
    return identity, True
