"""SneakerNet at the destination, the run's side: which drives have books waiting, and the
``ingest_sneaker_drive`` run that copies them from the drive and stores them.

``copy_and_store``: per pending book of the drive (``sneaker_ingest.plan_ingest`` recorded
them), copies it into staging while hashing the drive's bytes and compares them with the
manifest (a mismatch refuses the book at once; what the drive held is told to operators in
the event, not to the caller), then hands it to ``services.ingest``: the same verify,
rename and record as every other book, with ``sneaker_return.SneakerHooks`` at the end. A
copy killed half-way is started again from the drive. A book that is missing because the
drive went away (its identity no longer there) is not refused: the run fails and the book
waits for the drive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import Staging, discard_quietly, fail
from librarian_dagster.services.ingest import IngestOutcome, RunIsActive, ingest_transfer
from librarian_dagster.services.sneaker_arrived import (
    book_on_drive,
    drive_root,
    drive_still_there,
)
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity, TransferKind, TransferStatus
from librarian_dagster.storage import posix
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.copy import SourceChangedError, copy_and_hash

_PENDING = (TransferStatus.INITIATED, TransferStatus.STAGED, TransferStatus.VERIFYING)


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
    moved: Callable[[int], None] | None = None,
) -> list[IngestOutcome]:
    """Copy every pending book of the drive into staging, then store it (module docstring).

    ``done`` hears each book's outcome, ``moved`` the bytes copied off the drive as they go.
    """
    root = drive_root(drive)
    drive_still_there(root, drive_uuid)
    outcomes = []
    for transfer_id, _ in pending_books(catalogue, drive_uuid):
        refused = _copy_in(catalogue, stores, root, drive_uuid, transfer_id, moved)
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
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    root: Path,
    drive_uuid: str,
    transfer_id: int,
    moved: Callable[[int], None] | None = None,
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
    try:
        found = copy_and_hash(
            book_on_drive(root, name), staging.data_path, expected.algorithm, moved
        )
    except FileNotFoundError:
        drive_still_there(root, drive_uuid)  # else the run fails; the book waits for it
        return _refuse(catalogue, transfer_id, name, "it is not on the drive", staging)
    except (SourceChangedError, ChecksumError, StoreError) as error:
        return _refuse(
            catalogue, transfer_id, name, f"cannot copy it from the drive: {error}", staging
        )
    if found != expected:
        # What the drive holds is not said back: the caller learns only that it differs.
        reason = f"checksum mismatch: the drive's copy is not the manifest's {expected}"
        return _refuse(catalogue, transfer_id, name, reason, staging, found=str(found))
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        if transfer is not None and transfer.status == TransferStatus.INITIATED:
            transfer.status = TransferStatus.STAGED
            transfer.launched_at = datetime.now(UTC)  # this run stores it next
    return None


def _refuse(
    catalogue: Catalogue,
    transfer_id: int,
    name: str,
    reason: str,
    staging: Staging,
    found: str | None = None,
) -> IngestOutcome:
    """The book is refused (an event for operators, with what the drive held)."""
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
                details={
                    "transfer_id": transfer_id,
                    "drive_uuid": transfer.drive_uuid,
                    **({"found": found} if found else {}),
                },
            )
    discard_quietly(staging, f"refused drive book {transfer_id}")
    return IngestOutcome(transfer_id, name, "failed", reason, store=staging.store.name)
