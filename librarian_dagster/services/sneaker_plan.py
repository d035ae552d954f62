"""SneakerNet at the source: which drive may be filled now, and which books it should carry.

``open_fill`` checks a sneaker store before anything is written to it (declared, in the
catalogue, enabled, filling, the right drive mounted, its destination a known peer) and
takes what a fill needs to know. ``candidates`` reads, a page at a time above the store's
fill mark and up to ``settled_upto``, the books its drive should carry: those it lacks that
travel no other way (on another drive going the same way, or at its destination already).
``fills_due`` is the sensor's question, answered without reading the catalogue's books.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, Instance, Librarian, RemoteInstance, Store
from librarian_dagster.services.errors import Conflict
from librarian_dagster.services.stores import (
    check_recorded_drive,
    drive_bytes,
    drive_problem,
    open_store,
)
from librarian_dagster.settings import LibrarianSettings, StoreSettings
from librarian_dagster.states import DriveState, StoreKind
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.sneaker import DriveError, DriveIdentity


class DriveRefused(Conflict):
    """This drive cannot be used so now (filled, listed, wiped): why is the message; nothing
    was written."""


@dataclass(frozen=True)
class Book:
    id: int
    name: str
    size: int
    checksum: str


@dataclass
class DriveFill:
    """One fill's view of its drive, decided at the start under the lock."""

    store_id: int
    config: StoreSettings
    store: LocalStore
    drive_uuid: str
    competing: list[int]
    destination_id: int | None
    upto: int
    used: int
    # The most the drive takes, empty (``stores.drive_limit``); set once it is locked.
    limit: int = 0


def sneaker_config(settings: LibrarianSettings, name: str) -> StoreSettings:
    for config in settings.stores:
        if config.name == name:
            if config.kind != StoreKind.SNEAKER:
                raise DriveRefused(f"store {name!r} is a {config.kind} store, not a sneaker drive")
            return config
    raise DriveRefused(f"no store named {name!r} is declared in the config")


def drive_in_place(
    session: Session, settings: LibrarianSettings, config: StoreSettings
) -> tuple[Store, DriveIdentity]:
    """The store's row and the identity of its drive, if the drive in place is the one to
    use (mounted, this store's, the one its copies are on); else DriveRefused saying why."""
    row = session.scalar(select(Store).where(Store.name == config.name))
    if row is None:
        raise DriveRefused(f"store {config.name!r} is not in the catalogue yet: run librarian init")
    try:
        identity = check_recorded_drive(config, settings.name, row.drive_uuid)
    except DriveError as error:
        raise DriveRefused(f"store {config.name!r}: {error}") from None
    if row.drive_uuid is None:
        row.drive_uuid = identity.drive_uuid  # provisioned by init; recorded as serve would
    return row, identity


def open_fill(
    session: Session, settings: LibrarianSettings, config: StoreSettings, store: LocalStore
) -> DriveFill:
    """Check that this store may be filled now; what the fill needs to know about it."""
    row, identity = drive_in_place(session, settings, config)
    if not row.enabled:
        raise DriveRefused(f"store {config.name!r} is disabled (librarian store enable)")
    if row.state != DriveState.FILLING:
        raise DriveRefused(f"store {config.name!r} is {row.state}, not filling")
    destination_id = None
    if config.destination is not None:
        destination_id = session.scalar(
            select(Librarian.id).where(Librarian.name == config.destination)
        )
        if destination_id is None:
            raise DriveRefused(
                f"store {config.name!r} names destination {config.destination!r}, which is not "
                f"a peer here: librarian peer add {config.destination} …, or remove destination"
            )
    return DriveFill(
        store_id=row.id,
        config=config,
        store=store,
        drive_uuid=identity.drive_uuid,
        competing=_competing_drives(session, settings, config),
        destination_id=destination_id,
        upto=settled_upto(session, settings),
        used=drive_bytes(session, row.id),
    )


def settled_upto(session: Session, settings: LibrarianSettings) -> int:
    """The newest book id below which no book can still appear: below the first book
    catalogued in the last ``[transfer] catalogue_lag_seconds``. On PostgreSQL ids are
    taken before commit, so a book may become visible after a higher one; a fill mark
    past it would leave it behind for good (the clone pipeline waits the same lag). One
    look-up by the ``created_at`` index, one over the primary key."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.transfer.catalogue_lag_seconds)
    young = session.scalar(select(func.min(File.id)).where(File.created_at >= cutoff))
    if young is not None:
        return young - 1
    return session.scalar(select(func.max(File.id))) or 0


def _competing_drives(
    session: Session, settings: LibrarianSettings, config: StoreSettings
) -> list[int]:
    """Other drives whose books this one need not carry: any other drive, unless both
    name destinations and they differ (then each carries what its own destination needs).
    A drive dropped from the config still counts: it may be on its way."""
    destinations = {c.name: c.destination for c in settings.stores}
    found = []
    for store_id, name in session.execute(
        select(Store.id, Store.name).where(
            Store.kind == StoreKind.SNEAKER, Store.name != config.name
        )
    ):
        other = destinations.get(name)
        if config.destination is None or other is None or other == config.destination:
            found.append(store_id)
    return found


def fill_mark(session: Session, store_id: int) -> int:
    return session.scalar(select(Store.fill_high_water_file_id).where(Store.id == store_id)) or 0


def save_fill_mark(catalogue: Catalogue, store_id: int, mark: int) -> None:
    with catalogue.session() as session:
        session.execute(
            update(Store)
            .where(Store.id == store_id, Store.fill_high_water_file_id < mark)
            .values(fill_high_water_file_id=mark)
        )


def candidates(session: Session, drive: DriveFill, after: int, limit: int) -> list[Book]:
    """Books above ``after`` (up to the newest at the start) that this drive should carry.

    Each is one indexed look-up per exclusion: instances by (store_id, file_id), remote
    instances by (librarian_id, file_id).
    """
    query = (
        select(File.id, File.name, File.size, File.checksum)
        .where(File.id > after, File.id <= drive.upto)
        .where(
            ~exists().where(
                Instance.file_id == File.id,
                Instance.store_id.in_([drive.store_id, *drive.competing]),
            )
        )
        .order_by(File.id)
        .limit(limit)
    )
    if drive.destination_id is not None:
        query = query.where(
            ~exists().where(
                RemoteInstance.file_id == File.id,
                RemoteInstance.librarian_id == drive.destination_id,
            )
        )
    return [Book(*row) for row in session.execute(query)]


def sources(
    session: Session, settings: LibrarianSettings, file_ids: list[int]
) -> dict[int, LocalStore]:
    """For each book, a local store of ours holding a copy in service (None: no such copy)."""
    if not file_ids:
        return {}
    local = {c.name: c for c in settings.stores if c.kind == StoreKind.LOCAL}
    found: dict[int, LocalStore] = {}
    for file_id, store_name in session.execute(
        select(Instance.file_id, Store.name)
        .join(Store, Store.id == Instance.store_id)
        .where(
            Instance.file_id.in_(file_ids),
            Instance.available.is_(True),
            Store.kind == StoreKind.LOCAL,
            Store.declared.is_(True),
        )
        .order_by(Instance.file_id, Store.id)
    ):
        if file_id not in found and store_name in local:
            found[file_id] = open_store(local[store_name])
    return found


@dataclass(frozen=True)
class FillDue:
    """A drive that is filling and has books above its mark: worth a fill run."""

    store: str
    drive_uuid: str | None
    trip: int
    mark: int
    newest: int


def fills_due(
    session: Session, settings: LibrarianSettings, declared: Mapping[str, StoreSettings]
) -> tuple[list[FillDue], dict[str, str]]:
    """Filling, enabled drives with newer books than their mark; and why others are not
    asked for (their drive is not there, or not the right one). One max over the primary
    key, one row per sneaker store, one identity read per drive."""
    newest = settled_upto(session, settings)
    due: list[FillDue] = []
    problems: dict[str, str] = {}
    for row in session.scalars(
        select(Store).where(
            Store.kind == StoreKind.SNEAKER,
            Store.state == DriveState.FILLING,
            Store.enabled.is_(True),
            Store.declared.is_(True),
        )
    ):
        config = declared.get(row.name)
        if config is None or newest <= row.fill_high_water_file_id:
            continue
        problem = drive_problem(config, settings.name, row.drive_uuid)
        if problem is not None:
            problems[row.name] = problem
            continue
        due.append(
            FillDue(row.name, row.drive_uuid, row.drive_trip, row.fill_high_water_file_id, newest)
        )
    return due, problems
