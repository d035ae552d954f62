"""One clone batch, step by step: what every step shares, and submitting it to the mover.

Asking the peer to stage a batch is ``clones_stage``, settling its task ``clones_settle``.

``run_batch`` does whatever the batch still needs, reading its state afresh, so a
``clone_batch`` run can be repeated, re-executed or killed at any point (see
``services.clones`` for the whole life of a batch). Network calls (the peer, the mover)
happen outside transactions; each state change is one short transaction:

- killed before the peer's answer is recorded: the next run asks again, and the peer answers
  the same (its stage is idempotent per outgoing transfer id);
- killed after the submission id is recorded but before the task id: the next run submits
  again with the same submission id, and the mover returns the same task;
- killed while settling: nothing was recorded; the next run reads the same report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    Instance,
    Librarian,
    OutgoingTransfer,
    Store,
    TransferBatch,
)
from librarian_dagster.services import outbox
from librarian_dagster.services.events import record_event
from librarian_dagster.settings import LibrarianSettings, TransferSettings
from librarian_dagster.states import (
    MOVER_BUSY,
    BatchStatus,
    Severity,
    TransferStatus,
)
from librarian_dagster.storage.movers.protocol import (
    MoveItem,
    Mover,
    MoverError,
)
from librarian_dagster.wire.clones import CLONES_FAIL

Step = Literal["staged", "submitted", "waiting", "moving", "settled", "over"]


@dataclass
class BatchOutcome:
    """What a run did to a batch, for its log and metadata."""

    batch_id: int
    peer: str
    step: Step
    detail: str = ""
    books: int = 0
    bytes: int = 0
    task_id: str | None = None
    mover: str | None = None
    fault: str | None = None
    seconds: float = 0.0
    # Outbox rows this step wrote (delivered at once by the run, the sensor's backstop).
    callbacks: list[int] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class BatchDeferred(Exception):
    """The batch could not go on now (peer down, mover refusing); it is retried later."""

    def __init__(self, outcome: BatchOutcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def defer(
    catalogue: Catalogue, settings: LibrarianSettings, batch_id: int, outcome: BatchOutcome
) -> BatchDeferred:
    """Count the failed attempt, back off, remember why; the exception to raise."""
    with catalogue.session() as session:
        batch = session.get(TransferBatch, batch_id, with_for_update=True)
        if batch is not None:
            batch.attempts += 1
            batch.failure_reason = outcome.detail[:4000]
            batch.next_attempt_at = datetime.now(UTC) + retry_delay(
                settings.transfer, batch.attempts
            )
    return BatchDeferred(outcome)


def retry_delay(transfer: TransferSettings, attempts: int) -> timedelta:
    """The back-off before the next send of a book that failed ``attempts`` times."""
    seconds = transfer.retry_backoff_seconds * 2 ** max(0, min(attempts - 1, 20))
    return timedelta(seconds=min(seconds, transfer.retry_backoff_max_seconds))


def schedule_resend(
    session: Session,
    settings: LibrarianSettings,
    row: OutgoingTransfer,
    reason: str,
    *,
    count: bool = True,
    now: datetime | None = None,
) -> bool:
    """Send ``row``'s book again later, or fail it for good after ``max_attempts``.

    ``count=False`` for a wait that is nobody's fault. Returns True if it will be sent
    again. A book failed for good is owed to nobody; the
    peer is told (``/clones/fail``) so that it removes what it staged.
    """
    now = now or datetime.now(UTC)
    if count:
        row.attempts += 1
    row.failure_reason = reason[:4000]
    row.batch_id = None
    remote_transfer_id = row.remote_transfer_id
    # The next try asks the peer afresh and reads whichever copy here is in service then.
    row.remote_transfer_id = row.remote_staging_path = row.source_path = None
    if row.attempts >= settings.transfer.max_attempts:
        row.status = TransferStatus.FAILED
        row.completed_at = now
        record_event(
            session,
            Severity.ERROR,
            "clone_failed",
            f"sending {row.file.name!r} to {row.librarian.name} failed {row.attempts} times; "
            f"last: {reason}",
            subject=row.file.name,
            details={"transfer_id": row.id, "peer": row.librarian.name},
        )
        if remote_transfer_id is not None:
            tell_peer_to_drop(
                session, row.librarian_id, remote_transfer_id, f"the sender gave up: {reason}"
            )
        return False
    row.status = TransferStatus.INITIATED
    row.next_attempt_at = now + retry_delay(settings.transfer, row.attempts if count else 1)
    return True


def tell_peer_to_drop(session: Session, peer_id: int, remote_transfer_id: int, reason: str) -> int:
    """Owe the peer ``/clones/fail`` (as the source) for its incoming transfer: it drops
    what it staged for a book we will not send (as far as it knows) on that transfer."""
    return outbox.enqueue(
        session,
        peer_id,
        CLONES_FAIL,
        {
            "role": "source",
            "transfers": [{"transfer_id": remote_transfer_id, "reason": reason[:4000]}],
        },
    )


def batch_row(session: Session, batch_id: int, *, lock: bool = False) -> TransferBatch | None:
    return session.get(TransferBatch, batch_id, with_for_update=lock)


def rows_of(session: Session, batch_id: int, status: TransferStatus) -> list[OutgoingTransfer]:
    return list(
        session.scalars(
            select(OutgoingTransfer)
            .where(OutgoingTransfer.batch_id == batch_id, OutgoingTransfer.status == status)
            .options(selectinload(OutgoingTransfer.file), selectinload(OutgoingTransfer.librarian))
            .order_by(OutgoingTransfer.id)
            .with_for_update()
        )
    )


def copies_here(session: Session, file_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Per file id, (path, store name) of an available copy in one of our stores (the
    oldest); one query for a whole batch."""
    found: dict[int, tuple[str, str]] = {}
    for file_id, path, store in session.execute(
        select(Instance.file_id, Instance.path, Store.name)
        .join(Store, Store.id == Instance.store_id)
        .where(Instance.file_id.in_(list(file_ids)), Instance.available)
        .order_by(Instance.id.desc())
    ):
        found[file_id] = (path, store)
    return found


# -- submit -----------------------------------------------------------------------------


def _take_slot(session: Session, settings: LibrarianSettings, batch: TransferBatch) -> bool:
    """Whether the batch's mover has a free task slot; locks that mover's peers so that
    two runs cannot both take the last one."""
    session.execute(
        select(Librarian.id).where(Librarian.mover == batch.mover).with_for_update()
    ).all()
    busy = session.scalar(
        select(func.count())
        .select_from(TransferBatch)
        .where(TransferBatch.mover == batch.mover, TransferBatch.status.in_(MOVER_BUSY))
    )
    return int(busy or 0) < settings.transfer.max_active_transfers


def _items(session: Session, mover: Mover, batch: TransferBatch) -> list[MoveItem]:
    """The batch's books as the mover addresses them; our copy chosen now (and recorded)."""
    items = []
    rows = rows_of(session, batch.id, TransferStatus.INITIATED)
    copies = copies_here(session, [row.file_id for row in rows if row.source_path is None])
    for row in rows:
        if row.source_path is None:
            copy = copies.get(row.file_id)
            if copy is None:
                continue  # no copy here any more: left for the settle step to re-send
            row.source_path = copy[0]
        items.append(
            MoveItem(
                source=getattr(mover, "address", str)(row.source_path),
                destination=row.remote_staging_path or "",
                checksum=row.file.checksum,
                recursive=row.file.is_directory,
            )
        )
    return items


def submit(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    mover: Mover,
    batch_id: int,
    outcome: BatchOutcome,
) -> None:
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        assert batch is not None
        if batch.status == BatchStatus.STAGED:
            if not _take_slot(session, settings, batch):
                outcome.step = "waiting"
                outcome.detail = f"every {batch.mover} slot is taken; it waits for one"
                return
            batch.status = BatchStatus.SUBMITTING
            batch.submission_id = batch.submission_id or mover.new_submission_id()
        items = _items(session, mover, batch)
        submission_id, endpoint = batch.submission_id, batch.endpoint
        label = f"librarian {settings.name} to {batch.librarian.name} batch {batch.id}"
    assert submission_id is not None
    try:
        task_id = mover.submit(items, label=label, submission_id=submission_id, endpoint=endpoint)
    except MoverError as error:
        outcome.detail = f"the {mover.name} mover refused batch {batch_id}: {error}"
        outcome.fault = str(error)
        if error.needs_operator:
            with catalogue.session() as session:
                record_event(
                    session,
                    Severity.ERROR,
                    "mover_needs_operator",
                    outcome.detail,
                    subject=f"batch {batch_id}",
                    details={"batch_id": batch_id, "mover": mover.name},
                )
        raise defer(catalogue, settings, batch_id, outcome) from error
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        assert batch is not None
        if batch.status != BatchStatus.SUBMITTING:  # another run got there first
            outcome.step, outcome.detail = "over", f"already {batch.status.value}"
            return
        batch.task_id = task_id
        batch.status = BatchStatus.ONGOING
        batch.submitted_at = batch.submitted_at or datetime.now(UTC)
        batch.polled_at = None
        for row in rows_of(session, batch_id, TransferStatus.INITIATED):
            if row.source_path is not None:
                row.status = TransferStatus.ONGOING
    outcome.step, outcome.task_id = "submitted", task_id
    outcome.books, outcome.detail = len(items), f"submitted as {mover.name} task {task_id}"
