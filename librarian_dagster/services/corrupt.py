"""Corrupt-copy records: open one, close one, count and list them.

A record is opened by the integrity check (``services.integrity``) when a copy's bytes no
longer match, the copy is gone, or it cannot be read, and the copy is taken out of service
in the same transaction. It stays open — the ``checksums_match`` check fails, ``/ping`` is
unhealthy, ``librarian locate`` says "corrupt" — until the copy verifies again (re-read by
the check, or replaced by a repair) or an operator dismisses it with a note. Nothing here
deletes a byte: a dismissed copy stays out of service, and what to do with it is a human's
decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from librarian_dagster.catalogue.models import CorruptFile, Event, File, Instance, Store
from librarian_dagster.services.errors import Conflict, NotFound
from librarian_dagster.services.events import record_event
from librarian_dagster.services.files import decode_cursor, encode_cursor
from librarian_dagster.states import (
    UNRESOLVED_CORRUPTION,
    CorruptionReason,
    CorruptionStatus,
    Severity,
)

# Who closed a record that closed itself: the check re-read the copy and it matched.
VERIFIED_BY = "verified"
CURSOR_KIND = "c"  # keyset cursors of /corrupt (files use "f")


def open_record(session: Session, instance_id: int) -> CorruptFile | None:
    """The unresolved record of this copy, if there is one (at most one: a unique index)."""
    return session.scalar(
        select(CorruptFile).where(
            CorruptFile.instance_id == instance_id,
            CorruptFile.status.in_(UNRESOLVED_CORRUPTION),
        )
    )


def record_bad_copy(
    session: Session,
    instance: Instance,
    reason: CorruptionReason,
    expected: str,
    actual: str | None,
    detail: str | None,
) -> CorruptFile:
    """Take the copy out of service and open its record.

    The caller has looked under the copy's row lock and found no open record
    (``services.integrity._record``); the partial unique index is the backstop.
    """
    instance.available = False
    record = CorruptFile(
        file_id=instance.file_id,
        instance_id=instance.id,
        store_id=instance.store_id,
        reason=reason,
        expected_checksum=expected,
        actual_checksum=actual,
        detail=detail,
        status=CorruptionStatus.DETECTED,
    )
    session.add(record)
    session.flush()
    return record


def close_repaired(
    session: Session, record: CorruptFile, instance: Instance, *, by: str = VERIFIED_BY
) -> None:
    """The copy verified again (or was replaced by a good one, ``by`` a peer's re-send):
    back in service, record closed, the operator told."""
    now = datetime.now(UTC)
    instance.available = True
    instance.verified_at = now
    record.status = CorruptionStatus.REPAIRED
    record.resolved_at = now
    record.resolved_by = by[:64]
    record_event(
        session,
        Severity.INFO,
        "copy_repaired",
        f"copy in store {instance.store.name} verifies again (record {record.id}; {by})",
        subject=instance.file.name,
    )
    _resolve_record_events(session, record, instance.file.name, by[:64])


def _resolve_record_events(session: Session, record: CorruptFile, name: str, by: str) -> None:
    """The events that reported this record (its bad copy, its loss) are resolved with it;
    another store's bad copy of the same book keeps its own."""
    kinds = (f"copy_{record.reason.value}", "copy_lost")
    events = session.scalars(
        select(Event).where(Event.subject == name, Event.kind.in_(kinds), Event.resolved.is_(False))
    ).all()
    now = datetime.now(UTC)
    for event in events:
        if (event.details or {}).get("record_id") == record.id:
            event.resolved, event.resolved_at, event.resolved_by = True, now, by
            event.note = "repaired"


def dismiss(session: Session, record_id: int, by: str, note: str) -> CorruptFile:
    """An operator closes a record by hand; the copy stays out of service (nothing deleted)."""
    record = session.get(CorruptFile, record_id, with_for_update=True)
    if record is None:
        raise NotFound(f"no corrupt-copy record {record_id}")
    if record.status not in UNRESOLVED_CORRUPTION:
        raise Conflict(f"corrupt-copy record {record_id} is already {record.status.value}")
    record.status = CorruptionStatus.DISMISSED
    record.resolved_at = datetime.now(UTC)
    record.resolved_by = by
    record.note = note
    record_event(
        session,
        Severity.WARNING,
        "corrupt_dismissed",
        f"record {record_id} dismissed by {by}: {note}",
        subject=record.file.name,
    )
    session.flush()
    return record


def count_unresolved(session: Session) -> int:
    """How many copies are known bad and not yet repaired or dismissed (indexed by status)."""
    return (
        session.scalar(
            select(func.count(CorruptFile.id)).where(CorruptFile.status.in_(UNRESOLVED_CORRUPTION))
        )
        or 0
    )


def stores_with_open_records(session: Session) -> set[str]:
    """The stores holding a copy with an open record (one row per store: stores are few)."""
    return set(
        session.scalars(
            select(Store.name)
            .join(CorruptFile, CorruptFile.store_id == Store.id)
            .where(CorruptFile.status.in_(UNRESOLVED_CORRUPTION))
            .distinct()
        )
    )


def unresolved_names(session: Session, limit: int) -> list[str]:
    """Names of books with an open record, oldest record first, at most ``limit`` records."""
    names = session.scalars(
        select(File.name)
        .join(CorruptFile, CorruptFile.file_id == File.id)
        .where(CorruptFile.status.in_(UNRESOLVED_CORRUPTION))
        .order_by(CorruptFile.id)
        .limit(limit)
    ).all()
    return list(dict.fromkeys(names))


def open_problems(session: Session, file_id: int) -> dict[int, CorruptionReason]:
    """Per instance id of this file: why its open record says it is bad."""
    rows = session.execute(
        select(CorruptFile.instance_id, CorruptFile.reason).where(
            CorruptFile.file_id == file_id,
            CorruptFile.status.in_(UNRESOLVED_CORRUPTION),
            CorruptFile.instance_id.is_not(None),
        )
    ).all()
    return {instance_id: reason for instance_id, reason in rows}


def list_records(
    session: Session, *, include_resolved: bool, limit: int, cursor: str | None
) -> tuple[Sequence[CorruptFile], str | None]:
    """One page of records in detection order (keyset-paged by id), and the next cursor."""
    statement = (
        select(CorruptFile)
        .options(joinedload(CorruptFile.file), joinedload(CorruptFile.store))
        .order_by(CorruptFile.id)
        .limit(limit + 1)
    )
    if not include_resolved:
        statement = statement.where(CorruptFile.status.in_(UNRESOLVED_CORRUPTION))
    if cursor:
        statement = statement.where(CorruptFile.id > decode_cursor(cursor, CURSOR_KIND))
    rows = session.scalars(statement).all()
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id, CURSOR_KIND)
    return rows, None


# Open records a good copy closes: a ``lost`` one too (the book came back after all).
OPEN_FOR_REPAIR = (CorruptionStatus.DETECTED, CorruptionStatus.REFETCHING, CorruptionStatus.LOST)


def repair_recorded(session: Session, file: File, store_id: int, path: str, by: str) -> int:
    """The copy of ``file`` in ``store_id`` is good and in service again; its open records
    closed as repaired (with their events). How many records were closed."""
    instance = session.scalar(
        select(Instance).where(Instance.file_id == file.id, Instance.store_id == store_id)
    )
    now = datetime.now(UTC)
    if instance is None:
        instance = Instance(file_id=file.id, store_id=store_id, path=path, verified_at=now)
        session.add(instance)
        session.flush()
    instance.path = path
    records = session.scalars(
        select(CorruptFile).where(
            CorruptFile.instance_id == instance.id, CorruptFile.status.in_(OPEN_FOR_REPAIR)
        )
    ).all()
    for record in records:
        close_repaired(session, record, instance, by=by)
    instance.available = True
    instance.verified_at = now
    return len(records)
