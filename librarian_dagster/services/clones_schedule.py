"""Which clone batches need attention now: a run before the mover, or a poll of the mover.

The transfers sensor asks; ``lease`` marks a batch as having a run asked for (no other is
asked for until it is over or overdue: ``[transfer] relaunch_after_seconds``), and each run
releases it when its step is done (``release``) or backs off on failure. Every
query is bounded and served by the ``(status, id)`` index: only open batches are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Librarian, TransferBatch
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import MOVER_BUSY, BatchStatus, MoverName

# Batches that still need a run before the mover has a task.
BEFORE_TASK = (BatchStatus.INITIATED, BatchStatus.STAGED, BatchStatus.SUBMITTING)


def batches_due(
    session: Session, *, now: datetime, limit: int
) -> list[tuple[int, BatchStatus, str]]:
    """(id, status, mover) of batches before their mover task whose lease or back-off is
    over: a run must stage, submit, or resubmit them. Oldest first, bounded."""
    rows = session.execute(
        select(TransferBatch.id, TransferBatch.status, TransferBatch.mover)
        .where(
            TransferBatch.status.in_(BEFORE_TASK),
            or_(TransferBatch.next_attempt_at.is_(None), TransferBatch.next_attempt_at <= now),
        )
        .order_by(TransferBatch.id)
        .limit(limit)
    ).all()
    return [(row.id, row.status, row.mover) for row in rows]


def batches_to_poll(
    session: Session, settings: LibrarianSettings, *, now: datetime, limit: int
) -> list[tuple[int, str, str]]:
    """(id, mover, task id) of tasks in flight not asked about for ``poll_interval_seconds``,
    the longest unasked first, bounded (a mover allows so many requests a second)."""
    asked_before = now - timedelta(seconds=settings.transfer.poll_interval_seconds)
    rows = session.execute(
        select(TransferBatch.id, TransferBatch.mover, TransferBatch.task_id)
        .where(
            TransferBatch.status == BatchStatus.ONGOING,
            TransferBatch.task_id.is_not(None),
            or_(TransferBatch.polled_at.is_(None), TransferBatch.polled_at <= asked_before),
            or_(TransferBatch.next_attempt_at.is_(None), TransferBatch.next_attempt_at <= now),
        )
        .order_by(TransferBatch.polled_at.is_not(None), TransferBatch.polled_at, TransferBatch.id)
        .limit(limit)
    ).all()
    return [(row.id, row.mover, str(row.task_id)) for row in rows]


def mark_polled(catalogue: Catalogue, batch_ids: Sequence[int], now: datetime) -> None:
    if batch_ids:
        with catalogue.session() as session:
            session.execute(
                update(TransferBatch)
                .where(TransferBatch.id.in_(list(batch_ids)))
                .values(polled_at=now)
            )


def lease(
    catalogue: Catalogue, settings: LibrarianSettings, batch_ids: Sequence[int], now: datetime
) -> None:
    """A run was asked for these batches: no other until it is done or overdue."""
    if batch_ids:
        with catalogue.session() as session:
            session.execute(
                update(TransferBatch)
                .where(TransferBatch.id.in_(list(batch_ids)))
                .values(
                    run_requested_at=now,
                    next_attempt_at=now
                    + timedelta(seconds=settings.transfer.relaunch_after_seconds),
                )
            )


def batch_peers(session: Session, batch_ids: Sequence[int]) -> dict[int, str]:
    """The peer each batch goes to, by batch id (for run tags)."""
    if not batch_ids:
        return {}
    rows = session.execute(
        select(TransferBatch.id, Librarian.name)
        .join(Librarian, Librarian.id == TransferBatch.librarian_id)
        .where(TransferBatch.id.in_(list(batch_ids)))
    )
    return {int(batch_id): str(name) for batch_id, name in rows}


def mover_slots(session: Session, settings: LibrarianSettings) -> dict[str, int]:
    """Free task slots per mover (``max_active_transfers`` less the tasks it holds)."""
    busy = dict(
        session.execute(
            select(TransferBatch.mover, func.count())
            .where(TransferBatch.status.in_(MOVER_BUSY))
            .group_by(TransferBatch.mover)
        )
        .tuples()
        .all()
    )
    limit = settings.transfer.max_active_transfers
    return {mover.value: limit - int(busy.get(mover.value, 0)) for mover in MoverName}


def release(catalogue: Catalogue, batch_id: int) -> None:
    """The run is done with this step: the next may be asked for at once."""
    with catalogue.session() as session:
        session.execute(
            update(TransferBatch).where(TransferBatch.id == batch_id).values(next_attempt_at=None)
        )
