"""Incoming transfers: bytes on their way into one of our stores, whatever brought them.

Uploads, inbox books, and soon clone batches and SneakerNet drives all take one path: an
``incoming_transfers`` row (kind, name, size, store, a private staging directory) →
the data lands in staging → ``services.ingest`` verifies and stores it → ``stored`` or
``failed``. This module is the part they share: ``stage_transfer`` (the staging directory
and the row, together), ``fail``, ``discard``, ``keep_in_staging``, ``pending_for_name``.
Each kind keeps only its own steps in its own module (``uploads``, ``inbox``) and its hooks
for the end of ingest (``KindHooks``, called by ``services.ingest``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Store
from librarian_dagster.services.events import record_event
from librarian_dagster.states import PENDING_STATUSES, Severity, TransferKind, TransferStatus
from librarian_dagster.storage.errors import StagingNotFoundError
from librarian_dagster.storage.local_store import LocalStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staging:
    """Where a transfer's bytes go: the store, its staging directory and the data path."""

    store: LocalStore
    staging_id: str
    data_path: Path


def stage_transfer(
    session: Session,
    store_row: Store,
    store: LocalStore,
    *,
    kind: TransferKind,
    name: str,
    size: int,
    checksum: str | None,
    uploader: str,
    source: str,
) -> IncomingTransfer:
    """Reserve a staging directory in ``store`` and record the transfer as ``initiated``.

    In the caller's transaction. The store refuses (``StoreFullError``) before anything is
    created; if the row cannot be written, the new staging directory is removed again.
    """
    staged = store.stage(name, size)
    transfer = IncomingTransfer(
        kind=kind,
        status=TransferStatus.INITIATED,
        name=name,
        size=size,
        checksum=checksum,
        uploader=uploader,
        source=source,
        store_id=store_row.id,
        staging_id=staged.staging_id,
        staging_path=str(staged.data_path),
    )
    session.add(transfer)
    try:
        session.flush()
    except BaseException:
        store.discard_staging(staged.staging_id)
        raise
    return transfer


def staging_of(transfer: IncomingTransfer, stores: dict[str, LocalStore]) -> Staging:
    store = stores[transfer.store.name]
    return Staging(store, transfer.staging_id, Path(transfer.staging_path))


def pending_for_name(session: Session, name: str) -> IncomingTransfer | None:
    """The one transfer of this name that is not final yet, if any (a unique index)."""
    return session.scalar(
        select(IncomingTransfer).where(
            IncomingTransfer.name == name, IncomingTransfer.status.in_(PENDING_STATUSES)
        )
    )


def fail(transfer: IncomingTransfer, reason: str) -> None:
    transfer.status = TransferStatus.FAILED
    transfer.failure_reason = reason
    transfer.completed_at = datetime.now(UTC)


def discard(staging: Staging) -> None:
    """Remove a staging directory and its data; a missing one is already discarded."""
    with contextlib.suppress(StagingNotFoundError):
        staging.store.discard_staging(staging.staging_id)


def discard_quietly(staging: Staging, why: str) -> None:
    """``discard``, where a failure must not undo what already committed: it is logged, and
    what is left counts as leftover staging (``/ping``)."""
    try:
        discard(staging)
    except OSError as error:
        log.warning("could not remove the staging at %s (%s): %s", staging.data_path, why, error)


def keep_in_staging(
    session: Session, transfer: IncomingTransfer, staging: Staging, reason: str, why: str
) -> None:
    """A failed transfer's data stays in staging; an event tells an operator where and why."""
    record_event(
        session,
        Severity.WARNING,
        "failed_data_kept",
        f"{transfer.kind.value} {transfer.name!r} failed ({reason}); its data is kept in "
        f"staging at {staging.data_path}: {why}",
        subject=transfer.name,
        details={"transfer_id": transfer.id, "staging_path": str(staging.data_path)},
    )


# Work a hook leaves for after the outcome has committed (given the catalogue, for events).
AfterCommit = Callable[[Catalogue], None]


class KindHooks(Protocol):
    """What one kind of incoming transfer adds to the end of ingest.

    Both are called inside the transaction that records the outcome (after the claim was
    checked), so what they write to the catalogue (an event, a callback in the outbox)
    commits with it or not at all. File work that is quick and harmless to find done by a
    later attempt (renaming a book back to its producer) may happen there too; slow work
    (removing a big tree) goes into the ``AfterCommit`` that ``on_failed`` returns, so that no
    write lock (SQLite's is the whole database) is held while it runs.
    """

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None: ...

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit | None: ...


class KeepInStaging:
    """For kinds without hooks of their own: keep the data, tell an operator where it is."""

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None:
        """Nothing to do."""

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit | None:
        why = f"ingest has no hooks for {transfer.kind.value} transfers yet"
        keep_in_staging(session, transfer, staging, reason, why)
        return None
