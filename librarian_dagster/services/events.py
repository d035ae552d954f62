"""The operator-facing event log: what went wrong or needs a human, kept until resolved.

``record_event`` adds one row: a thing that happened once (a book refused, a drive wiped).
``raise_event`` is for a *cause* that may be seen again and again (a peer unreachable, a
store's burst guard, a stuck transfer): while an event of the same kind and subject is
open, it bumps that event's ``count`` and ``last_at`` and refreshes its message instead of
adding a row, so a peer down for a week is one event, not one per sensor tick. Its answer
says whether the event is new, which is what the notifier sends a message for.

Resolving an event closes it with who and why; for some kinds that is also the operator's
word that the cause is dealt with (a resolved ``burst_guard`` lifts the guard on its store).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Event
from librarian_dagster.services.errors import InvalidRequest, NotFound
from librarian_dagster.services.files import decode_cursor, encode_cursor
from librarian_dagster.states import Severity
from librarian_dagster.wire.events import MAX_RESOLVE, EventInfo

CURSOR_KIND = "e"  # keyset cursors of /events (newest first)


def record_event(
    session: Session,
    severity: Severity,
    kind: str,
    message: str,
    *,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    event = Event(severity=severity, kind=kind, message=message, subject=subject, details=details)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class Raised:
    event: Event
    new: bool
    # Seen again, at a higher severity than before (the notifier tells it again at once).
    escalated: bool = False


def open_event(session: Session, kind: str, subject: str | None) -> Event | None:
    """The open event of this cause, if any (the oldest, should two have raced)."""
    subject_is = Event.subject.is_(None) if subject is None else Event.subject == subject
    return session.scalar(
        select(Event)
        .where(Event.kind == kind, subject_is, Event.resolved.is_(False))
        .order_by(Event.id)
        .limit(1)
    )


def raise_event(
    session: Session,
    severity: Severity,
    kind: str,
    message: str,
    *,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> Raised:
    """Record a cause once while it stays open; later sightings only count (see module)."""
    event = open_event(session, kind, subject)
    if event is None:
        return Raised(
            record_event(session, severity, kind, message, subject=subject, details=details),
            new=True,
        )
    event.count += 1
    event.last_at = datetime.now(UTC)
    event.message = message
    escalated = severity.rank > event.severity.rank
    if escalated:
        event.severity = severity
    if details is not None:
        event.details = {**(event.details or {}), **details}
    session.flush()
    return Raised(event, new=False, escalated=escalated)


def is_open(session: Session, kind: str, subject: str) -> bool:
    return open_event(session, kind, subject) is not None


def event_info(event: Event) -> EventInfo:
    return EventInfo(
        id=event.id,
        severity=event.severity,
        kind=event.kind,
        message=event.message,
        subject=event.subject,
        details=event.details,
        count=event.count,
        created_at=event.created_at,
        last_at=event.last_at,
        resolved=event.resolved,
        resolved_at=event.resolved_at,
        resolved_by=event.resolved_by,
        note=event.note,
    )


def list_events(
    session: Session,
    *,
    include_resolved: bool = False,
    severity: Severity | None = None,
    kind: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[Event], str | None]:
    """One page, newest first (keyset-paged by id), and the cursor of the next."""
    statement = select(Event).order_by(Event.id.desc()).limit(limit + 1)
    if not include_resolved:
        statement = statement.where(Event.resolved.is_(False))
    if severity is not None:
        statement = statement.where(Event.severity.in_(severity.at_least()))
    if kind is not None:
        statement = statement.where(Event.kind == kind)
    if subject is not None:
        statement = statement.where(Event.subject == subject)
    if since is not None:
        statement = statement.where(Event.created_at >= since)
    if cursor:
        statement = statement.where(Event.id < decode_cursor(cursor, CURSOR_KIND))
    rows = session.scalars(statement).all()
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id, CURSOR_KIND)
    return rows, None


def count_open(session: Session) -> int:
    return session.scalar(select(func.count(Event.id)).where(Event.resolved.is_(False))) or 0


def resolve_events(session: Session, ids: Sequence[int], by: str, note: str) -> list[Event]:
    """Close the events ``ids`` (already closed ones are left as they were closed).

    All or nothing: an unknown id is refused and nothing is closed.
    """
    wanted = sorted(set(ids))
    if not wanted or len(wanted) > MAX_RESOLVE:
        raise InvalidRequest(f"give between 1 and {MAX_RESOLVE} event ids")
    events = session.scalars(
        select(Event).where(Event.id.in_(wanted)).order_by(Event.id).with_for_update()
    ).all()
    missing = sorted(set(wanted) - {event.id for event in events})
    if missing:
        raise NotFound(f"no event {', '.join(map(str, missing[:20]))}")
    now = datetime.now(UTC)
    for event in events:
        if not event.resolved:
            event.resolved, event.resolved_at, event.resolved_by = True, now, by
            event.note = note
    session.flush()
    return list(events)


def resolve_cause(session: Session, kind: str, subject: str | None, by: str, note: str) -> int:
    """Close the open events of one cause because the cause went away (the copy verifies
    again, the transfer finished); returns how many were closed."""
    subject_is = Event.subject.is_(None) if subject is None else Event.subject == subject
    result = session.execute(
        update(Event)
        .where(Event.kind == kind, subject_is, Event.resolved.is_(False))
        .values(resolved=True, resolved_at=datetime.now(UTC), resolved_by=by, note=note)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
