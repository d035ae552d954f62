"""SneakerNet at the destination: ingest a drive from its manifest, leaving the drive intact.

Two steps, as an upload has (stage, then verify and store):

- ``plan_ingest`` (``POST /sneaker/ingest``): checks the drive against the manifest (its
  identity names the same drive, librarian and store), that the librarian which filled it
  is a peer here (it is told what arrived), and decides per book: already here with the
  same checksum (*present*: the origin is told again), here with another checksum or
  missing from the drive (*refused*, an event; never overwritten), or to be copied: an
  incoming transfer of kind ``sneaker`` with a staging directory in a destination store,
  tagged with the drive's UUID. Books whose transfer from an earlier request is still
  pending are left to it (an interrupted ingest resumes); nothing is copied yet.
- ``copy_and_store`` (the ``ingest_sneaker_drive`` run): per pending book of the drive,
  copies it into staging while hashing the drive's bytes and compares them with the
  manifest (a mismatch refuses the book at once), then hands it to ``services.ingest``:
  the same verify, rename and record as every other book, with
  ``sneaker_return.SneakerHooks`` at the end (a remote instance at the origin, and
  ``/sneaker/complete`` owed to it through the outbox). A copy killed half-way is started
  again from the drive.

``drive_status`` is the progress the client polls (``GET /sneaker/ingest/{uuid}``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Librarian, Store
from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import (
    Staging,
    discard_quietly,
    fail,
    pending_for_name,
    stage_transfer,
)
from librarian_dagster.services.ingest import IngestOutcome, RunIsActive, ingest_transfer
from librarian_dagster.services.sneaker_arrived import (
    check_drive_against,
    drive_identity,
    drive_root,
    read_drive_manifest,
)
from librarian_dagster.services.sneaker_return import tell_origin
from librarian_dagster.services.uploads import choose_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity, StoreKind, TransferKind, TransferStatus
from librarian_dagster.storage import posix
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.copy import SourceChangedError, copy_and_hash
from librarian_dagster.wire.sneaker import (
    DRIVE_STORE_DIR,
    ManifestBook,
    SneakerBook,
    SneakerIngestRequest,
    SneakerIngestStatus,
    SneakerManifest,
)

_PENDING = (TransferStatus.INITIATED, TransferStatus.STAGED, TransferStatus.VERIFYING)
_SHOWN = {
    TransferStatus.INITIATED: "waiting",
    TransferStatus.STAGED: "copying",
    TransferStatus.VERIFYING: "copying",
    TransferStatus.STORED: "stored",
    TransferStatus.FAILED: "refused",
    TransferStatus.CANCELLED: "refused",
}


@dataclass
class IngestPlan:
    status: SneakerIngestStatus
    present: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def plan_ingest(
    session: Session,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    request: SneakerIngestRequest,
) -> IngestPlan:
    """Check the drive and record what is to be copied from it (see the module docstring)."""
    root = drive_root(request.drive)
    manifest = request.manifest or read_drive_manifest(root)
    check_drive_against(root, manifest, settings)
    origin = session.scalar(select(Librarian).where(Librarian.name == manifest.librarian))
    if origin is None:
        raise Conflict(
            f"{manifest.librarian!r} filled this drive and is not a peer here: add it first "
            f"(librarian peer add {manifest.librarian} …) so that it hears what arrived"
        )
    wanted = _wanted_store(session, request.store)
    present: list[ManifestBook] = []
    refused: list[tuple[str, str]] = []
    for book in manifest.books:
        why = _refusal(session, root, book, manifest.drive_uuid)
        if why == "present":
            present.append(book)
        elif why is not None:
            refused.append((book.name, why))
        elif pending_for_name(session, book.name) is None:
            try:
                _stage(session, settings, stores, wanted, origin, manifest, book, root)
            except (Conflict, StoreError) as error:  # no room, no store
                refused.append((book.name, str(error)))
    # Books an earlier request left pending: this request takes them up (its drive path,
    # and a run asked for at the sensor's next tick).
    session.execute(
        update(IncomingTransfer)
        .where(
            IncomingTransfer.drive_uuid == manifest.drive_uuid,
            IncomingTransfer.status == TransferStatus.INITIATED,
        )
        .values(drive_path=str(root), launched_at=None)
    )
    for name, why in refused:
        record_event(
            session,
            Severity.ERROR,
            "sneaker_refused",
            f"drive {manifest.drive_uuid}: {name} refused: {why}",
            subject=name,
            details={"drive_uuid": manifest.drive_uuid, "origin": manifest.librarian},
        )
    tell_origin(session, origin.id, manifest, present)
    status = drive_status(session, manifest.drive_uuid, manifest.librarian)
    books = {book.name: book for book in status.books}
    for book in present:
        books[book.name] = SneakerBook(name=book.name, size=book.size, state="present")
    sizes = {book.name: book.size for book in manifest.books}
    for name, why in refused:
        books[name] = SneakerBook(name=name, size=sizes[name], state="refused", reason=why)
    status = SneakerIngestStatus(
        drive_uuid=status.drive_uuid,
        origin=status.origin,
        store=status.store,
        run_id=status.run_id,
        books=list(books.values()),
    )
    return IngestPlan(status, [book.name for book in present], refused)


def _wanted_store(session: Session, name: str | None) -> Store | None:
    if name is None:
        return None
    row = session.scalar(select(Store).where(Store.name == name))
    if row is None or not (row.kind == StoreKind.LOCAL and row.ingestable and row.declared):
        raise InvalidRequest(f"store: {name!r} is not an ingestable local store here")
    if not row.enabled:
        raise Conflict(f"store {name!r} is disabled")
    return row


def _refusal(session: Session, root: Path, book: ManifestBook, drive_uuid: str) -> str | None:
    """Why a book is not to be copied ("present": it is here already), or None."""
    try:
        Checksum.parse(book.checksum)
    except ChecksumError as error:
        return f"its checksum in the manifest is not one: {error}"
    known = session.scalar(select(File.checksum).where(File.name == book.name))
    if known is not None:
        if known == book.checksum:
            return "present"
        return f"a book of that name with checksum {known} is here already; it is kept"
    try:
        on_drive = posix.within(root / DRIVE_STORE_DIR, book.name)
    except StoreError as error:
        return str(error)
    if not os.path.lexists(on_drive):
        return "it is not on the drive"
    pending = pending_for_name(session, book.name)
    if pending is not None and pending.drive_uuid != drive_uuid:
        return f"another transfer of it is under way ({pending.kind.value} {pending.id})"
    return None


def _stage(
    session: Session,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    wanted: Store | None,
    origin: Librarian,
    manifest: SneakerManifest,
    book: ManifestBook,
    root: Path,
) -> None:
    if wanted is None:
        row, store = choose_store(session, stores, settings.ingest, book.size, None)
    else:
        row, store = wanted, stores[wanted.name]
    transfer = stage_transfer(
        session,
        row,
        store,
        kind=TransferKind.SNEAKER,
        name=book.name,
        size=book.size,
        checksum=book.checksum,
        uploader=book.uploader,
        source=book.source,
    )
    transfer.librarian_id = origin.id
    transfer.source_store = book.origin_store
    transfer.drive_uuid = manifest.drive_uuid
    transfer.drive_store = manifest.store
    transfer.drive_path = str(root)


def drive_status(session: Session, drive_uuid: str, origin: str = "") -> SneakerIngestStatus:
    """Where each book of a drive's ingest is (its latest transfer), by the drive's index."""
    latest: dict[str, IncomingTransfer] = {}
    for transfer in session.scalars(
        select(IncomingTransfer)
        .where(IncomingTransfer.drive_uuid == drive_uuid)
        .order_by(IncomingTransfer.id)
    ):
        latest[transfer.name] = transfer
    if not latest and not origin:
        raise NotFound(f"no ingest of drive {drive_uuid} here")
    books = [
        SneakerBook(
            name=t.name,
            size=t.size,
            state=_SHOWN[t.status],  # type: ignore[arg-type]
            reason=t.failure_reason,
        )
        for t in latest.values()
    ]
    first = next(iter(latest.values()), None)
    return SneakerIngestStatus(
        drive_uuid=drive_uuid,
        origin=origin or (first.source if first is not None else ""),
        store=first.store.name if first is not None else "",
        run_id=next((t.run_id for t in reversed(latest.values()) if t.run_id), None),
        books=books,
    )


def drives_to_ingest(
    catalogue: Catalogue, *, relaunch_after_seconds: float, limit: int
) -> dict[str, str]:
    """Drives with books waiting to be copied and no run asked for (or one overdue): drive
    UUID → where it is mounted. By the ``(status, id)`` index, at most ``limit`` rows."""
    overdue = datetime.now(UTC) - timedelta(seconds=relaunch_after_seconds)
    found: dict[str, str] = {}
    with catalogue.session() as session:
        for drive_uuid, path in session.execute(
            select(IncomingTransfer.drive_uuid, IncomingTransfer.drive_path)
            .where(
                IncomingTransfer.status == TransferStatus.INITIATED,
                IncomingTransfer.kind == TransferKind.SNEAKER,
                or_(IncomingTransfer.launched_at.is_(None), IncomingTransfer.launched_at < overdue),
            )
            .order_by(IncomingTransfer.id)
            .limit(limit)
        ):
            if drive_uuid and path:
                found.setdefault(drive_uuid, path)
    return found


def mark_drive_launched(catalogue: Catalogue, drive_uuid: str) -> None:
    """A run was asked for to copy this drive's waiting books."""
    with catalogue.session() as session:
        session.execute(
            update(IncomingTransfer)
            .where(
                IncomingTransfer.drive_uuid == drive_uuid,
                IncomingTransfer.status == TransferStatus.INITIATED,
            )
            .values(launched_at=datetime.now(UTC))
        )


def pending_books(catalogue: Catalogue, drive_uuid: str) -> list[tuple[int, str]]:
    """(transfer id, name) of the drive's books not stored or refused yet, in order."""
    with catalogue.session() as session:
        return [
            (transfer_id, name)
            for transfer_id, name in session.execute(
                select(IncomingTransfer.id, IncomingTransfer.name)
                .where(
                    IncomingTransfer.drive_uuid == drive_uuid,
                    IncomingTransfer.status.in_(_PENDING),
                )
                .order_by(IncomingTransfer.id)
            )
        ]


def copy_and_store(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    drive_uuid: str,
    drive: str,
    *,
    run_id: str,
    run_is_active: RunIsActive,
    done: Callable[[IngestOutcome], None] | None = None,
) -> list[IngestOutcome]:
    """Copy every pending book of the drive into staging, then store it (module docstring)."""
    root = drive_root(drive)
    identity = drive_identity(root)
    if identity.drive_uuid != drive_uuid:
        raise Conflict(f"{root} holds {identity.describe()}, not drive {drive_uuid}")
    outcomes = []
    for transfer_id, _ in pending_books(catalogue, drive_uuid):
        refused = _copy_in(catalogue, stores, root, transfer_id)
        outcome = refused or ingest_transfer(
            catalogue,
            stores,
            transfer_id,
            run_id=run_id,
            run_is_active=run_is_active,
            settings=settings,
        )
        outcomes.append(outcome)
        if done is not None:
            done(outcome)
    return outcomes


def _copy_in(
    catalogue: Catalogue, stores: dict[str, LocalStore], root: Path, transfer_id: int
) -> IngestOutcome | None:
    """Copy a waiting book from the drive into its staging and mark it staged; an outcome
    if it was refused. Books already copied are left as they are."""
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id)
        if transfer is None or transfer.status != TransferStatus.INITIATED:
            return None
        name, expected = transfer.name, Checksum.parse(transfer.checksum or "")
        staging = Staging(
            stores[transfer.store.name], transfer.staging_id, Path(transfer.staging_path)
        )
    if os.path.lexists(staging.data_path):  # a copy that was killed half-way
        posix.remove_tree(staging.data_path)
    source = posix.within(root / DRIVE_STORE_DIR, name)
    try:
        found = copy_and_hash(source, staging.data_path, expected.algorithm)
    except FileNotFoundError:
        return _refuse(catalogue, transfer_id, name, "it is not on the drive", staging)
    except (SourceChangedError, ChecksumError) as error:
        return _refuse(
            catalogue, transfer_id, name, f"cannot copy it from the drive: {error}", staging
        )
    if found != expected:
        reason = f"checksum mismatch: the manifest says {expected}, the drive holds {found}"
        return _refuse(catalogue, transfer_id, name, reason, staging)
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        if transfer is not None and transfer.status == TransferStatus.INITIATED:
            transfer.status = TransferStatus.STAGED
            transfer.launched_at = datetime.now(UTC)  # this run stores it next
    return None


def _refuse(
    catalogue: Catalogue, transfer_id: int, name: str, reason: str, staging: Staging
) -> IngestOutcome:
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        if transfer is not None and transfer.status == TransferStatus.INITIATED:
            fail(transfer, reason)
            record_event(
                session,
                Severity.ERROR,
                "sneaker_refused",
                f"drive {transfer.drive_uuid}: {name} refused: {reason}",
                subject=name,
                details={"transfer_id": transfer_id, "drive_uuid": transfer.drive_uuid},
            )
    discard_quietly(staging, f"refused drive book {transfer_id}")
    return IngestOutcome(transfer_id, name, "failed", reason, store=staging.store.name)
