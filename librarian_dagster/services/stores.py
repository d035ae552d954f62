"""Stores: from the config file into the catalogue, and from settings to ``LocalStore`` objects.

Stores are declared in the TOML file. ``sync_stores`` makes the catalogue agree (adds new
ones, updates kind/root/ingestable, marks vanished ones undeclared so their instances stay on
record) and is run by ``librarian init`` and at ``librarian serve``. ``enabled`` is runtime
state an operator toggles (``librarian store enable|disable``), so a sync only sets it for
new stores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import File, Instance, Store
from librarian_dagster.services.errors import NotFound
from librarian_dagster.settings import LibrarianSettings, StoreSettings
from librarian_dagster.states import DriveState, StoreKind
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.sneaker import DriveAway, DriveError, DriveIdentity, check_drive


def open_store(store: StoreSettings) -> LocalStore:
    return LocalStore(
        store.name,
        store.root,
        reserve_bytes=store.reserve_bytes,
        kind=store.kind,
        require_mount=store.require_mount,
    )


def open_stores(settings: LibrarianSettings) -> dict[str, LocalStore]:
    return {store.name: open_store(store) for store in settings.stores}


def sync_stores(session: Session, settings: LibrarianSettings) -> list[Store]:
    """Upsert the declared stores; returns the catalogue rows of the declared ones."""
    existing = {store.name: store for store in session.scalars(select(Store))}
    declared: list[Store] = []
    for config in settings.stores:
        row = existing.pop(config.name, None)
        if row is None:
            row = Store(name=config.name, enabled=config.enabled)
            session.add(row)
        row.kind = StoreKind(config.kind)
        row.root = str(config.root)
        row.ingestable = config.ingestable
        row.declared = True
        if row.kind == StoreKind.SNEAKER:
            row.state = row.state or DriveState.FILLING
        else:
            row.state = row.drive_uuid = None
        declared.append(row)
    for row in existing.values():
        row.declared = False
    session.flush()
    return declared


@dataclass(frozen=True)
class RecordedDrive:
    """What the catalogue knows of a sneaker store's drive: which one holds its copies."""

    drive_uuid: str | None = None
    holds_copies: bool = False


def recorded_drives(session: Session) -> dict[str, RecordedDrive]:
    """Per sneaker store in the catalogue: its recorded drive, and whether copies are on it."""
    found: dict[str, RecordedDrive] = {}
    for row in session.scalars(select(Store).where(Store.kind == StoreKind.SNEAKER)):
        held = session.scalar(select(exists().where(Instance.store_id == row.id)))
        found[row.name] = RecordedDrive(row.drive_uuid, bool(held))
    return found


def record_drives(session: Session, drives: Mapping[str, DriveIdentity]) -> None:
    """Remember the drive in place for each sneaker store (``bootstrap`` vetted them)."""
    for name, identity in drives.items():
        row = session.scalar(select(Store).where(Store.name == name))
        if row is not None:
            row.drive_uuid = identity.drive_uuid
    session.flush()


def list_stores(session: Session) -> Sequence[Store]:
    return session.scalars(select(Store).order_by(Store.name)).all()


def set_store_enabled(session: Session, name: str, enabled: bool) -> Store:
    row = session.scalar(select(Store).where(Store.name == name))
    if row is None:
        raise NotFound(f"no store named {name!r}")
    row.enabled = enabled
    session.flush()
    return row


@dataclass(frozen=True)
class StoreOverview:
    """A store as ``store list`` and ``GET /stores`` show it: catalogue row, disk and drive.

    ``books`` counts the copies recorded there. ``used_bytes`` is what
    its file system has in use or, for a drive, what the books on it take; ``free_bytes`` is
    what a new book may still use (the reserve kept, and a drive's ``capacity_bytes``). Both
    are None while the store cannot be used (``problem`` says why).
    """

    name: str
    kind: StoreKind
    root: str
    enabled: bool
    ingestable: bool
    declared: bool
    state: DriveState | None
    drive_uuid: str | None
    capacity_bytes: int | None
    books: int
    used_bytes: int | None
    free_bytes: int | None
    problem: str | None


def store_overview(
    session: Session, settings: LibrarianSettings, only: str | None = None
) -> list[StoreOverview]:
    """Every store the catalogue knows (or ``only`` that one), declared or not.

    One count per store over the ``(store_id, file_id)`` index; for a drive, one sum over
    its own copies (what one drive holds).
    """
    declared = {config.name: config for config in settings.stores}
    found: list[StoreOverview] = []
    for row in list_stores(session):
        if only is not None and row.name != only:
            continue
        books = session.scalar(select(func.count()).where(Instance.store_id == row.id)) or 0
        config = declared.get(row.name)
        used = free = None
        problem = None if config is not None else "no longer declared in the config"
        if config is not None and row.kind == StoreKind.SNEAKER:
            problem = drive_problem(config, settings.name, row.drive_uuid)
        if config is not None and problem is None:
            store = open_store(config)
            health = store.health()
            if health.ok:
                try:
                    used, free = store.used_bytes(), store.free_bytes()
                except (OSError, StoreError) as error:
                    problem = f"cannot read its file system: {error}"
            else:
                problem = _layout_problem(health.exists, row.kind)
            if used is not None and free is not None and row.kind == StoreKind.SNEAKER:
                used = drive_bytes(session, row.id)  # a drive: what its books take
                free = max(0, drive_room(store, config, used, disk_free=free))
        found.append(
            StoreOverview(
                name=row.name,
                kind=row.kind,
                root=row.root,
                enabled=row.enabled,
                ingestable=row.ingestable,
                declared=row.declared,
                state=row.state,
                drive_uuid=row.drive_uuid,
                capacity_bytes=config.capacity_bytes if config is not None else None,
                books=books,
                used_bytes=used,
                free_bytes=free,
                problem=problem,
            )
        )
    return found


def drive_bytes(session: Session, store_id: int) -> int:
    """What the books recorded on a drive take (in service or not: both are on it)."""
    total = session.scalar(
        select(func.coalesce(func.sum(File.size), 0))
        .join(Instance, Instance.file_id == File.id)
        .where(Instance.store_id == store_id)
    )
    return int(total or 0)


def drive_room(
    store: LocalStore, config: StoreSettings, used: int, *, disk_free: int | None = None
) -> int:
    """Bytes a fill may still put on a drive holding ``used``: what its disk has and what
    is left of ``capacity_bytes``, the reserve kept from both (``disk_free`` if known)."""
    room = store.free_bytes() if disk_free is None else disk_free
    if config.capacity_bytes is not None:
        room = min(room, config.capacity_bytes - config.reserve_bytes - used)
    return room


def drive_limit(store: LocalStore, config: StoreSettings) -> int:
    """The most a fill may ever put on this drive, empty: its disk's size and
    ``capacity_bytes``, the reserve kept from both. A book larger never goes on it."""
    status = os.statvfs(store.root)
    limit = status.f_blocks * status.f_frsize - config.reserve_bytes
    if config.capacity_bytes is not None:
        limit = min(limit, config.capacity_bytes - config.reserve_bytes)
    return limit


def check_recorded_drive(
    config: StoreSettings, librarian: str, recorded: str | None
) -> DriveIdentity:
    """The identity of the drive at a sneaker store's root if it is the one to use: this
    store's, and the drive its copies are on (``recorded``); DriveError saying why not."""
    identity = check_drive(config.root, librarian, config.name, require_mount=config.require_mount)
    if recorded is not None and identity.drive_uuid != recorded:
        raise DriveError(
            f"drive {identity.drive_uuid} is mounted; its copies are on drive {recorded}"
        )
    return identity


# What ``drive_problem`` says of a root where no drive is mounted.
DRIVE_AWAY = "no drive mounted"


def drive_problem(config: StoreSettings, librarian: str, recorded: str | None) -> str | None:
    """Why the drive at a sneaker store's root is not the one to use, or None."""
    try:
        check_recorded_drive(config, librarian, recorded)
    except DriveAway:
        return DRIVE_AWAY
    except DriveError as error:
        return str(error)
    return None


def drive_verdict(
    config: StoreSettings, librarian: str, row: Store | None
) -> tuple[str | None, bool]:
    """(problem, travelling) of a sneaker store's drive: away is fine only while it travels
    (``in_transit``, ``returned``); then there is no problem, and nothing there to read."""
    problem = drive_problem(config, librarian, row.drive_uuid if row else None)
    travelling = (
        problem == DRIVE_AWAY
        and row is not None
        and row.state in (DriveState.IN_TRANSIT, DriveState.RETURNED)
    )
    return (None if travelling else problem), travelling


def _layout_problem(root_exists: bool, kind: StoreKind) -> str:
    if not root_exists:
        return DRIVE_AWAY if kind == StoreKind.SNEAKER else "its root is missing"
    return "not laid out or not writable (see librarian serve's notes)"
