"""The callback outbox: calls we owe a peer, kept until the peer has taken them.

A callback ("clone complete", "drive ingested") is a state change of ours that a peer must
hear about, and the peer may be down for days. So it is never sent from inside the work
that caused it: ``enqueue`` writes it in the caller's transaction (it exists exactly when
the change it reports does), and a deliverer later ``take_due`` rows, calls the peer outside
any transaction, and marks each ``delivered`` or ``failed`` — a failure is retried with an
exponential back-off (``BACKOFF_FIRST`` doubling up to ``BACKOFF_MAX``), forever: a callback
is never dropped, only delayed, and ``last_error`` says why.

Delivery is at least once: a deliverer killed after the call but before ``delivered`` sends
it again, so every callback route must be idempotent. ``take_due`` leases what it takes
(``next_attempt_at`` moves ``lease_seconds`` ahead) so that two deliverers do not send the
same row at the same moment, and a row whose deliverer died is due again once the lease is
over. Served by the ``(delivered_at, next_attempt_at)`` index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import CallbackOutbox

BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
LEASE = timedelta(minutes=5)
# last_error is for an operator to read, not a log: keep the first part.
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Callback:
    """One owed call, as the deliverer needs it (no ORM state outside the transaction)."""

    id: int
    librarian_id: int
    route: str
    payload: dict[str, Any]
    attempts: int


def enqueue(session: Session, librarian_id: int, route: str, payload: dict[str, Any]) -> int:
    """Owe ``librarian_id`` a call of ``route`` with ``payload``, in the caller's transaction."""
    row = CallbackOutbox(librarian_id=librarian_id, route=route, payload=payload)
    session.add(row)
    session.flush()
    return row.id


def backoff(
    attempts: int, first: timedelta = BACKOFF_FIRST, maximum: timedelta = BACKOFF_MAX
) -> timedelta:
    """How long to wait after the ``attempts``-th failed delivery (1 → ``first``)."""
    if attempts < 1:
        return timedelta(0)
    doubled = first * (2 ** min(attempts - 1, 20))
    return min(doubled, maximum)


def take_due(
    session: Session,
    *,
    limit: int = 100,
    librarian_ids: Sequence[int] | None = None,
    callback_ids: Sequence[int] | None = None,
    lease: timedelta = LEASE,
    now: datetime | None = None,
) -> list[Callback]:
    """Up to ``limit`` undelivered callbacks whose time has come, oldest due first, leased.

    ``librarian_ids`` restricts them to some peers (those that answer, say), and
    ``callback_ids`` to some rows (those a run just wrote and delivers at once).
    """
    now = now or datetime.now(UTC)
    statement = (
        select(CallbackOutbox)
        .where(CallbackOutbox.delivered_at.is_(None), CallbackOutbox.next_attempt_at <= now)
        .order_by(CallbackOutbox.next_attempt_at, CallbackOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if librarian_ids is not None:
        statement = statement.where(CallbackOutbox.librarian_id.in_(list(librarian_ids)))
    if callback_ids is not None:
        statement = statement.where(CallbackOutbox.id.in_(list(callback_ids)))
    taken = []
    for row in session.scalars(statement):
        row.next_attempt_at = now + lease
        taken.append(Callback(row.id, row.librarian_id, row.route, row.payload, row.attempts))
    session.flush()
    return taken


def mark_delivered(session: Session, callback_id: int, *, now: datetime | None = None) -> None:
    """The peer took it: it is never sent again."""
    row = session.get(CallbackOutbox, callback_id, with_for_update=True)
    if row is not None and row.delivered_at is None:
        row.delivered_at = now or datetime.now(UTC)
        row.last_error = None


def mark_failed(
    session: Session,
    callback_id: int,
    error: str,
    *,
    now: datetime | None = None,
    first: timedelta = BACKOFF_FIRST,
    maximum: timedelta = BACKOFF_MAX,
) -> datetime | None:
    """The call did not go through: count it, keep why, and set when to try again."""
    row = session.get(CallbackOutbox, callback_id, with_for_update=True)
    if row is None or row.delivered_at is not None:
        return None
    row.attempts += 1
    row.last_error = error[:MAX_ERROR_LENGTH]
    row.next_attempt_at = (now or datetime.now(UTC)) + backoff(row.attempts, first, maximum)
    return row.next_attempt_at


def due_count(session: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """How many undelivered callbacks are due (counting stops at ``limit``: a sensor needs
    to know "some", cheaply)."""
    now = now or datetime.now(UTC)
    due = (
        select(CallbackOutbox.id)
        .where(CallbackOutbox.delivered_at.is_(None), CallbackOutbox.next_attempt_at <= now)
        .limit(limit)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(due)) or 0)
