"""SneakerNet at the destination: ingest a drive from its manifest, leaving the drive intact.

Two steps, as an upload has (stage, then verify and store):

- ``plan_ingest`` (``POST /sneaker/ingest``): checks the drive against the manifest (its
  identity names the same drive, librarian and store; a manifest given apart must be the
  drive's current trip's), that the librarian which filled it is a peer here (it is told
  what arrived), and decides per book: already here with the same checksum and a copy in
  service (*present*: the origin is told again), here with another checksum, here with no
  copy in service, or missing from the drive (*refused*, an event; never overwritten, never
  confirmed), or to be copied: an incoming transfer of kind ``sneaker`` with a staging
  directory in a destination store, tagged with the drive's UUID and trip. Books whose
  transfer from an earlier request is still pending are left to it (an interrupted ingest
  resumes); nothing is copied yet.
- ``sneaker_copy.copy_and_store`` (the ``ingest_sneaker_drive`` run) copies and stores them.

``drive_status`` is the progress the client polls (``GET /sneaker/ingest/{uuid}``): the
drive's latest trip here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    Store,
)
from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import (
    pending_for_name,
    stage_transfer,
)
from librarian_dagster.services.sneaker_arrived import (
    book_on_drive,
    check_drive_against,
    drive_root,
    read_drive_manifest,
)
from librarian_dagster.services.sneaker_return import tell_origin
from librarian_dagster.services.uploads import choose_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity, StoreKind, TransferKind, TransferStatus
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.wire.sneaker import (
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
    if request.manifest is not None:
        _same_trip(root, manifest)
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
        .values(drive_path=str(root), drive_trip=manifest.trip, launched_at=None)
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
    status = drive_status(session, manifest.drive_uuid, manifest.librarian, manifest.trip)
    books = {book.name: book for book in status.books}
    for book in present:
        books[book.name] = SneakerBook(name=book.name, size=book.size, state="present")
    sizes = {book.name: book.size for book in manifest.books}
    for name, why in refused:
        books[name] = SneakerBook(name=name, size=sizes[name], state="refused", reason=why)
    status = SneakerIngestStatus(
        drive_uuid=status.drive_uuid,
        trip=manifest.trip,
        origin=status.origin,
        store=status.store,
        run_id=status.run_id,
        books=list(books.values()),
    )
    return IngestPlan(status, [book.name for book in present], refused)


def _same_trip(root: Path, manifest: SneakerManifest) -> None:
    """A manifest given apart must be the drive's current one, not an earlier trip's."""
    try:
        on_drive = read_drive_manifest(root)
    except (NotFound, InvalidRequest):
        return  # none on the drive (or unreadable): the given one is all there is
    if (on_drive.trip, on_drive.created) != (manifest.trip, manifest.created):
        raise Conflict(
            f"the manifest given is of trip {manifest.trip} of drive {manifest.drive_uuid} "
            f"(written {manifest.created:%Y-%m-%d %H:%M}); the drive carries the one of trip "
            f"{on_drive.trip} (written {on_drive.created:%Y-%m-%d %H:%M})"
        )


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
    known = session.execute(select(File.id, File.checksum).where(File.name == book.name)).first()
    if known is not None:
        if known.checksum != book.checksum:
            return f"a book of that name with checksum {known.checksum} is here already; it is kept"
        in_service = select(Instance.id).where(
            Instance.file_id == known.id, Instance.available.is_(True)
        )
        if session.scalar(in_service.limit(1)) is None:
            # Never confirmed to the origin: the drive's copy may be what repairs ours.
            return "it is catalogued here but no copy of it is in service (corrupt or offline)"
        return "present"
    try:
        on_drive = book_on_drive(root, book.name)
    except StoreError as error:
        return str(error)
    except FileNotFoundError:
        return "it is not on the drive"
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
    transfer.drive_trip = manifest.trip
    transfer.drive_path = str(root)


def drive_status(
    session: Session, drive_uuid: str, origin: str = "", trip: int | None = None
) -> SneakerIngestStatus:
    """Where each book of a drive's ingest on ``trip`` (default: its latest here) is (its
    latest transfer), by the drive's index."""
    if trip is None:
        trip = session.scalar(
            select(func.max(IncomingTransfer.drive_trip)).where(
                IncomingTransfer.drive_uuid == drive_uuid
            )
        )
    latest: dict[str, IncomingTransfer] = {}
    for transfer in session.scalars(
        select(IncomingTransfer)
        .where(IncomingTransfer.drive_uuid == drive_uuid, IncomingTransfer.drive_trip == trip)
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
    if not origin and first is not None and first.librarian_id is not None:
        origin = session.scalar(select(Librarian.name).where(Librarian.id == first.librarian_id))
    return SneakerIngestStatus(
        drive_uuid=drive_uuid,
        trip=trip or 1,
        origin=origin or "",
        store=first.store.name if first is not None else "",
        run_id=next((t.run_id for t in reversed(latest.values()) if t.run_id), None),
        books=books,
    )
