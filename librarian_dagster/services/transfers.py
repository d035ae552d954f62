"""Transfers for operators: list books on their way out (or in), retry, cancel, requeue.

``GET /api/v2/transfers`` and ``librarian transfer list|retry|cancel`` call these. Retrying
a book that failed for good gives it a fresh budget of attempts and sends it in the next
batch (its ``created_at`` stays: the age of a transfer is never reset); cancelling one
stops it here and tells the peer to drop what it staged. A cancelled book the peer stores
anyway is recorded as a copy there when it says so: the truth wins. ``requeue_books``
queues books a peer lacks for its next batches (a backfill of its asset in the UI).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Librarian,
    OutgoingTransfer,
    TransferBatch,
)
from librarian_dagster.services.clones import known_at_peer
from librarian_dagster.services.clones_batch import tell_peer_to_drop
from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.services.files import decode_cursor, encode_cursor
from librarian_dagster.states import OUTGOING_PENDING, TransferStatus
from librarian_dagster.wire import MAX_PAGE, TransferInfo
from librarian_dagster.wire.transfers import Direction

_CURSOR_KIND = {"outgoing": "o", "incoming": "i"}


def _outgoing_info(row: OutgoingTransfer, batch: TransferBatch | None) -> TransferInfo:
    return TransferInfo(
        id=row.id,
        direction="outgoing",
        peer=row.librarian.name,
        name=row.file.name,
        size=row.file.size,
        status=row.status,
        attempts=row.attempts,
        batch_id=row.batch_id,
        mover=batch.mover if batch is not None else row.librarian.mover,
        task_id=batch.task_id if batch is not None else None,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        next_attempt_at=row.next_attempt_at,
    )


def _incoming_info(row: IncomingTransfer, peers: dict[int, str]) -> TransferInfo:
    return TransferInfo(
        id=row.id,
        direction="incoming",
        peer=peers.get(row.librarian_id) if row.librarian_id is not None else None,
        name=row.name,
        size=row.size,
        status=row.status,
        attempts=row.attempts,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
    )


def list_transfers(
    session: Session,
    *,
    direction: Direction = "outgoing",
    peer: str | None = None,
    statuses: Sequence[TransferStatus] = (),
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[TransferInfo], str | None]:
    """One page, newest first, and the cursor of the next page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    peer_id = None
    if peer is not None:
        peer_id = session.scalar(select(Librarian.id).where(Librarian.name == peer))
        if peer_id is None:
            raise NotFound(f"no peer named {peer!r}")
    kind = _CURSOR_KIND[direction]
    if direction == "outgoing":
        statement = select(OutgoingTransfer).options(
            selectinload(OutgoingTransfer.file),
            selectinload(OutgoingTransfer.librarian),
            selectinload(OutgoingTransfer.batch),
        )
        table = OutgoingTransfer
    else:
        statement = select(IncomingTransfer)
        table = IncomingTransfer  # type: ignore[assignment]
    if peer_id is not None:
        statement = statement.where(table.librarian_id == peer_id)
    if statuses:
        statement = statement.where(table.status.in_(list(statuses)))
    if cursor:
        statement = statement.where(table.id < decode_cursor(cursor, kind))
    rows = list(session.scalars(statement.order_by(table.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].id, kind) if len(rows) > limit else None
    rows = rows[:limit]
    if direction == "outgoing":
        return [_outgoing_info(row, row.batch) for row in rows], next_cursor  # type: ignore[arg-type]
    peers = dict(session.execute(select(Librarian.id, Librarian.name)).tuples().all())
    return [_incoming_info(row, peers) for row in rows], next_cursor  # type: ignore[arg-type]


def _outgoing(session: Session, transfer_id: int) -> OutgoingTransfer:
    row = session.get(OutgoingTransfer, transfer_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no outgoing transfer {transfer_id}")
    return row


def retry_transfer(session: Session, transfer_id: int) -> TransferInfo:
    """Send a book that failed (or was cancelled) again, in the next batch, with a fresh
    budget of attempts; 409 for one still on its way or stored.

    The retry is a new transfer (the old one stays as it ended, its history): the peer
    stages it afresh, so a cancelled attempt's staging there, which the peer drops when
    it hears of the cancel, is never reused. Its ``created_at`` is the first try's: the
    age of a transfer is never reset.
    """
    row = _outgoing(session, transfer_id)
    if row.status not in (TransferStatus.FAILED, TransferStatus.CANCELLED):
        raise Conflict(
            f"transfer {transfer_id} is {row.status.value}: only a failed or "
            "cancelled one can be retried"
        )
    other = session.scalar(
        select(OutgoingTransfer.id).where(
            OutgoingTransfer.file_id == row.file_id,
            OutgoingTransfer.librarian_id == row.librarian_id,
            OutgoingTransfer.status.in_(OUTGOING_PENDING),
        )
    )
    if other is not None:
        raise Conflict(f"the book is on its way again already (transfer {other})")
    retry = OutgoingTransfer(
        file_id=row.file_id,
        librarian_id=row.librarian_id,
        status=TransferStatus.INITIATED,
        created_at=row.created_at,
        next_attempt_at=datetime.now(UTC),
        failure_reason=f"retry of transfer {row.id} by an operator (it: {row.failure_reason})"[
            :4000
        ],
    )
    session.add(retry)
    session.flush()
    return _outgoing_info(retry, None)


def cancel_transfer(session: Session, transfer_id: int, who: str) -> TransferInfo:
    """Stop sending a book; the peer is told to drop what it staged for it."""
    row = _outgoing(session, transfer_id)
    if row.status not in OUTGOING_PENDING:
        raise Conflict(f"transfer {transfer_id} is {row.status.value}: nothing to cancel")
    row.status = TransferStatus.CANCELLED
    row.completed_at = datetime.now(UTC)
    row.failure_reason = f"cancelled by {who}"
    if row.remote_transfer_id is not None:
        tell_peer_to_drop(session, row.librarian_id, row.remote_transfer_id, f"cancelled by {who}")
    session.flush()
    return _outgoing_info(row, None)


# Names per query when queueing books again (PostgreSQL takes 65,535 parameters).
REQUEUE_CHUNK = 5000


def requeue_books(
    session: Session, peer: Librarian, names: Sequence[str], *, now: datetime | None = None
) -> tuple[int, int]:
    """Send these books to ``peer`` (again), in the next batches: a UI backfill or an
    operator's request. Books it holds or that are in flight are left alone; a book that
    failed for good gets a fresh row. Returns (queued, left alone)."""
    now = now or datetime.now(UTC)
    queued = 0
    for start in range(0, len(names), REQUEUE_CHUNK):  # (PostgreSQL takes 65,535 parameters)
        queued += _requeue(session, peer, names[start : start + REQUEUE_CHUNK], now)
    return queued, len(names) - queued


def _requeue(session: Session, peer: Librarian, names: Sequence[str], now: datetime) -> int:
    files = session.execute(select(File.id, File.name).where(File.name.in_(list(names)))).all()
    ids = [row.id for row in files]
    held, in_flight = known_at_peer(session, peer.id, ids)
    busy = held | in_flight
    queued = 0
    for file_id in ids:
        if file_id in busy:
            continue
        session.add(
            OutgoingTransfer(
                file_id=file_id,
                librarian_id=peer.id,
                status=TransferStatus.INITIATED,
                next_attempt_at=now,
            )
        )
        queued += 1
    session.flush()
    return queued
