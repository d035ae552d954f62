"""SneakerNet's way back: the destination tells the origin what arrived; then the drive is
wiped and filled again.

- Destination: ``SneakerHooks`` (ingest's hooks for books of kind ``sneaker``) and
  ``tell_origin`` record a remote instance at the origin and owe it ``/sneaker/complete``
  through the outbox, which delivers it whenever the link is up (for days, with back-off).
- Origin: ``complete_drive_books`` (``POST /sneaker/complete``, from the peer the drive
  went to) records, idempotently, a remote instance at the caller for each book of that
  drive it now holds with our checksum. The copy on the drive stays recorded until the
  wipe (its bytes are still on it); once every book on a drive in transit is held
  elsewhere, the drive is ``returned``.
- Origin: ``forget_lost_drive`` (``librarian sneaker wipe --lost``): a drive that will
  not come back; its copies are forgotten (books left without any copy are named in an
  event) and the store takes a new drive.
- Origin: ``wipe_drive`` (``librarian sneaker wipe``) refuses, listing them, while any
  book on the drive has no confirmed copy at a peer; otherwise it removes the books from
  the drive, then their rows, keeps the identity, and sets the drive filling again. A wipe
  killed half-way is finished by the next one (a row whose book is gone is just removed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    RemoteInstance,
    Store,
)
from librarian_dagster.services import outbox
from librarian_dagster.services.copies import record_remote_instance, record_remote_instances
from librarian_dagster.services.errors import Forbidden, NotFound
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import AfterCommit, Staging, discard_quietly
from librarian_dagster.services.sneaker_plan import DriveRefused, drive_in_place, sneaker_config
from librarian_dagster.services.stores import open_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState, Severity, StoreKind
from librarian_dagster.storage import posix
from librarian_dagster.storage.sneaker import drive_lock
from librarian_dagster.wire.sneaker import (
    MANIFEST_FILE,
    SNEAKER_COMPLETE,
    DeliveredBook,
    ManifestBook,
    SneakerComplete,
    SneakerCompleteAck,
    SneakerManifest,
)

# Rows removed per transaction by a wipe; names listed when a wipe is refused.
WIPE_PAGE = 256
LISTED = 10


def _complete_payload(drive_uuid: str, store: str, books: list[DeliveredBook]) -> dict[str, Any]:
    """The body of ``/sneaker/complete``, checked by its model before it is owed."""
    body = SneakerComplete(drive_uuid=drive_uuid, store=store, books=books)
    return body.model_dump(mode="json")


class SneakerHooks:
    """What ingest does at the end of a drive's book (``incoming.KindHooks``).

    Stored: a remote instance at the origin (where it holds the book, if the manifest
    said) and ``/sneaker/complete`` owed to it. Refused: the staged bytes go once the
    failure has committed; the drive keeps the book, and the origin its copy on it.
    """

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None:
        if transfer.librarian_id is None or transfer.drive_uuid is None:
            return
        if transfer.source_store:
            record_remote_instance(session, file.id, transfer.librarian_id, transfer.source_store)
        book = DeliveredBook(name=file.name, checksum=file.checksum, store=transfer.store.name)
        outbox.enqueue(
            session,
            transfer.librarian_id,
            SNEAKER_COMPLETE,
            _complete_payload(transfer.drive_uuid, transfer.drive_store or "", [book]),
        )

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit:
        def remove(catalogue: Catalogue) -> None:
            discard_quietly(staging, f"refused drive book {transfer.id}")

        return remove


def tell_origin(
    session: Session, origin_id: int, manifest: SneakerManifest, books: Sequence[ManifestBook]
) -> None:
    """Books of the drive already here: the origin holds them too, and hears that we do."""
    if not books:
        return
    held = dict(
        session.execute(select(File.name, File.id).where(File.name.in_([b.name for b in books])))
        .tuples()
        .all()
    )
    where: dict[int, str] = {}
    for file_id, store in session.execute(
        select(Instance.file_id, Store.name)
        .join(Store, Store.id == Instance.store_id)
        .where(Instance.file_id.in_(list(held.values())), Instance.available.is_(True))
        .order_by(Instance.id)
    ):
        where.setdefault(file_id, store)
    record_remote_instances(
        session, origin_id, [(held[b.name], b.origin_store) for b in books if b.origin_store]
    )
    # Only books with a copy in service here are confirmed (plan_ingest's "present").
    payload = [
        DeliveredBook(name=b.name, checksum=b.checksum, store=where[held[b.name]])
        for b in books
        if held.get(b.name) in where
    ]
    if not payload:
        return
    outbox.enqueue(
        session,
        origin_id,
        SNEAKER_COMPLETE,
        _complete_payload(manifest.drive_uuid, manifest.store, payload),
    )


def complete_drive_books(
    session: Session, settings: LibrarianSettings, caller: Librarian, body: SneakerComplete
) -> SneakerCompleteAck:
    """The caller holds these books of one of our drives: record its copies (idempotent)."""
    row = session.scalar(
        select(Store).where(Store.name == body.store, Store.kind == StoreKind.SNEAKER)
    )
    if row is None or row.drive_uuid != body.drive_uuid:
        raise NotFound(f"no drive {body.drive_uuid} of a store {body.store!r} here")
    bound_for = next((c.destination for c in settings.stores if c.name == row.name), None)
    if bound_for is not None and bound_for != caller.name:
        raise Forbidden(f"drive {body.drive_uuid} was sent to {bound_for!r}, not {caller.name!r}")
    wanted = {book.name: book for book in body.books}
    if row.state not in (DriveState.IN_TRANSIT, DriveState.RETURNED):
        # No manifest has let this drive go: nobody can have ingested it (a late callback
        # of an earlier trip names books the drive no longer carries).
        return SneakerCompleteAck(recorded=0, unknown=sorted(wanted))
    on_drive = dict(
        session.execute(
            select(File.name, File)
            .join(Instance, Instance.file_id == File.id)
            .where(Instance.store_id == row.id, File.name.in_(list(wanted)))
        )
        .tuples()
        .all()
    )
    matched = [
        (file.id, wanted[name].store)
        for name, file in on_drive.items()
        if file.checksum == wanted[name].checksum
    ]
    record_remote_instances(session, caller.id, matched, verified=True)
    if row.state == DriveState.IN_TRANSIT and not _lacking(session, row.id, 1):
        row.state = DriveState.RETURNED
    unknown = sorted(set(wanted) - {name for name, _ in on_drive.items()}) + sorted(
        name for name, file in on_drive.items() if file.checksum != wanted[name].checksum
    )
    return SneakerCompleteAck(recorded=len(matched), unknown=unknown)


def _lacking_where(store_id: int, force: bool = False) -> list[ColumnElement[bool]]:
    """Books on this drive that no peer has confirmed (verified) holding; with ``force``,
    only those of them that have no other copy in service here either."""
    other = aliased(Instance)
    conditions = [
        Instance.store_id == store_id,
        ~exists().where(
            RemoteInstance.file_id == Instance.file_id, RemoteInstance.verified_at.is_not(None)
        ),
    ]
    if force:
        conditions.append(
            ~exists().where(
                other.file_id == Instance.file_id,
                other.store_id != store_id,
                other.available.is_(True),
            )
        )
    return conditions


def _lacking(session: Session, store_id: int, limit: int, force: bool = False) -> list[str]:
    """The names of such books (``_lacking_where``), at most ``limit``."""
    return list(
        session.scalars(
            select(File.name)
            .join(Instance, Instance.file_id == File.id)
            .where(*_lacking_where(store_id, force))
            .order_by(File.id)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class Wiped:
    store: str
    drive_uuid: str
    books: int
    bytes: int


def wipe_drive(
    catalogue: Catalogue, settings: LibrarianSettings, store_name: str, *, force: bool = False
) -> Wiped:
    """Empty the drive for its next trip (module docstring). ``force``: also books no peer
    confirmed, as long as each has another copy in service here (named in an event)."""
    config = sneaker_config(settings, store_name)
    store = open_store(config)
    with catalogue.session() as session:
        row, identity = drive_in_place(session, settings, config)
        _refuse_unless_delivered(session, row, force)
    with drive_lock(store.staging_dir, store_name):
        with catalogue.session() as session:
            row, identity = drive_in_place(session, settings, config)  # again, now it is ours
            _refuse_unless_delivered(session, row, force)
            if force:
                _record_undelivered(session, row)
            store_id = row.id
        books = size = 0
        while True:
            with catalogue.session() as session:
                page = session.execute(
                    select(Instance.id, File.name, File.size)
                    .join(File, File.id == Instance.file_id)
                    .where(Instance.store_id == store_id)
                    .order_by(Instance.id)
                    .limit(WIPE_PAGE)
                ).all()
            if not page:
                break
            for _, name, _ in page:
                with contextlib.suppress(FileNotFoundError):
                    store.delete(name)  # first the bytes: a row never outlives its check
            with catalogue.session() as session:
                session.execute(delete(Instance).where(Instance.id.in_([r[0] for r in page])))
            books += len(page)
            size += sum(r[2] for r in page)
        posix.remove_if_present(config.root / MANIFEST_FILE)
        for leftover in store.leftover_staging(older_than_seconds=-1):
            store.discard_staging(leftover.staging_id)
        with catalogue.session() as session:
            session.execute(
                update(Store)
                .where(Store.id == store_id)
                .values(
                    state=DriveState.FILLING,
                    fill_high_water_file_id=0,
                    drive_trip=Store.drive_trip + 1,
                )
            )
    return Wiped(store_name, identity.drive_uuid, books, size)


def _refuse_unless_delivered(session: Session, row: Store, force: bool) -> None:
    lacking = _lacking(session, row.id, LISTED + 1, force)
    if not lacking:
        return
    total = session.scalar(select(func.count()).where(*_lacking_where(row.id, force)))
    total = total or len(lacking)
    more = f" and {total - LISTED} more" if total > LISTED else ""
    shown = ", ".join(lacking[:LISTED]) + more
    if force:
        raise DriveRefused(
            f"store {row.name!r}: {total} books on the drive have no confirmed copy at a peer "
            f"and no other copy in service here: {shown}; nothing was removed"
        )
    raise DriveRefused(
        f"store {row.name!r}: {total} books on the drive have no confirmed copy at a peer "
        f"yet: {shown}; nothing was removed (--force wipes those that have another copy "
        f"in service here; they go on a later trip)"
    )


def _record_undelivered(session: Session, row: Store) -> None:
    """--force: name the books wiped although no peer confirmed them (they travel again)."""
    undelivered = _lacking(session, row.id, LISTED + 1)
    if not undelivered:
        return
    total = session.scalar(select(func.count()).where(*_lacking_where(row.id))) or 0
    more = f" and {total - LISTED} more" if total > LISTED else ""
    record_event(
        session,
        Severity.WARNING,
        "drive_wiped_undelivered",
        f"store {row.name}: drive {row.drive_uuid} wiped with --force; {total} books on it "
        f"were not confirmed at a peer and go on a later trip: "
        f"{', '.join(undelivered[:LISTED])}{more}",
        subject=row.name,
        details={"drive_uuid": row.drive_uuid, "undelivered": total},
    )


@dataclass(frozen=True)
class Forgotten:
    store: str
    drive_uuid: str | None
    books: int
    # Books whose only known copy was on the lost drive.
    without_copies: list[str]


def forget_lost_drive(
    catalogue: Catalogue, settings: LibrarianSettings, store_name: str
) -> Forgotten:
    """The drive of ``store_name`` is lost: forget the copies recorded on it (nothing on any
    disk is touched; the drive is not there). Books with no other copy, here in service or
    at a peer, are named in an event: their loss is recorded, not hidden. Other drives look
    at every book again (they left out the lost drive's), and the store takes a new drive
    (``librarian init`` provisions it) and fills again."""
    sneaker_config(settings, store_name)
    with catalogue.session() as session:
        row = session.scalar(select(Store).where(Store.name == store_name))
        if row is None:
            raise NotFound(f"no store named {store_name!r} in the catalogue")
        on_drive = select(Instance.file_id).where(Instance.store_id == row.id)
        books = session.scalar(select(func.count()).select_from(on_drive.subquery())) or 0
        orphans = list(
            session.scalars(
                select(File.name)
                .where(File.id.in_(on_drive))
                .where(
                    ~exists().where(
                        Instance.file_id == File.id,
                        Instance.store_id != row.id,
                        Instance.available.is_(True),
                    ),
                    ~exists().where(RemoteInstance.file_id == File.id),
                )
                .order_by(File.id)
            )
        )
        session.execute(delete(Instance).where(Instance.store_id == row.id))
        lost_uuid = row.drive_uuid
        row.drive_uuid = None
        row.state = DriveState.FILLING
        row.drive_trip += 1
        session.execute(
            update(Store).where(Store.kind == StoreKind.SNEAKER).values(fill_high_water_file_id=0)
        )
        record_event(
            session,
            Severity.CRITICAL if orphans else Severity.WARNING,
            "drive_lost",
            f"drive {lost_uuid} of store {store_name} marked lost: {books} copies forgotten"
            + _orphans_said(orphans),
            subject=store_name,
            details={"drive_uuid": lost_uuid, "without_copies": orphans[:1000]},
        )
    return Forgotten(store_name, lost_uuid, books, orphans)


def _orphans_said(orphans: list[str]) -> str:
    if not orphans:
        return ""
    more = f" and {len(orphans) - LISTED} more" if len(orphans) > LISTED else ""
    return f"; {len(orphans)} books have no copy left: {', '.join(orphans[:LISTED])}{more}"
