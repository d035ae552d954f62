"""Which copies an integrity pass reads, and which stores it must not read at all.

A pass reads, least recently verified first, copies in service on stores that can be read
now, one page at a time (keyset on ``(verified_at, id)``, the index migration 0006 made),
so a catalogue of millions of copies costs one short index range per page, never a sort of
every copy. A scheduled pass reads only copies that are *due* (verified longer ago than
``DUE_FRACTION`` of ``[integrity] period_days``): each copy is re-read a little before its
period ends, and the slack absorbs a few missed runs. Known-bad copies are re-read too
(up to half the pass's book limit), so one an operator restored is found good again.

A store is not read when it cannot be (its store area gone, or empty while the catalogue
records copies there: an unmounted disk's bare mount point), when it is a sneaker drive
that is not the right one, or when it was dropped from the configuration. A drive that is
away while it travels (``in_transit``, ``returned``) is simply not read: that is its job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session, joinedload

from librarian_dagster.catalogue.models import CorruptFile, File, Instance, Store
from librarian_dagster.services.stores import drive_verdict
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UNRESOLVED_CORRUPTION, StoreKind
from librarian_dagster.storage.local_store import LocalStore

# A copy is due for a scheduled re-read once this share of the period has passed.
DUE_FRACTION = 0.8
PAGE = 256
OVERDUE_CAP = 100_000  # overdue copies are counted up to this many (a bounded count)


@dataclass(frozen=True)
class Candidate:
    instance_id: int
    name: str
    checksum: str
    store: str
    size: int
    verified_at: datetime | None
    known_bad: bool = False


def due_before(now: datetime, period_days: float) -> datetime:
    return now - timedelta(days=period_days * DUE_FRACTION)


def known_bad(
    session: Session, names: Sequence[str], readable: Sequence[str], limit: int
) -> list[Candidate]:
    """Copies with an open record on a readable store, the longest unread first."""
    if not readable or limit <= 0:
        return []
    statement = (
        select(CorruptFile)
        .join(Store, CorruptFile.store_id == Store.id)
        .where(
            Store.name.in_(list(readable)),
            CorruptFile.status.in_(UNRESOLVED_CORRUPTION),
            CorruptFile.instance_id.is_not(None),
        )
        .options(joinedload(CorruptFile.file), joinedload(CorruptFile.store))
        .order_by(CorruptFile.updated_at, CorruptFile.id)
        .limit(limit)
    )
    if names:
        statement = statement.join(File, CorruptFile.file_id == File.id).where(
            File.name.in_(list(names))
        )
    return [
        Candidate(
            record.instance_id or 0,
            record.file.name,
            record.file.checksum,
            record.store.name,
            record.file.size,
            None,
            known_bad=True,
        )
        for record in session.scalars(statement).unique().all()
    ]


def in_service_page(
    session: Session,
    names: Sequence[str],
    store_ids: Sequence[int],
    *,
    due: datetime | None,
    after: tuple[datetime | None, int] | None,
    size: int = PAGE,
) -> list[Candidate]:
    """The next page of copies in service on ``store_ids``, least recently verified first.

    One range of the ``(verified_at, id)`` index per page: the keyset is a row-value
    comparison (an ``OR`` of two conditions made PostgreSQL filter from the start of the
    range, and SQLite merge and sort), and the store filter is written ``store_id + 0`` so
    that no index can serve it: SQLite, without ``ANALYZE`` statistics, would otherwise read
    every copy of the store through ``(store_id, file_id)`` and sort them all; this way the
    only index left to use is the one that also gives the order.
    """
    if not store_ids or size <= 0:
        return []
    statement = (
        select(Instance.id, File.name, File.checksum, Store.name, File.size, Instance.verified_at)
        .select_from(Instance)
        .join(File, Instance.file_id == File.id)
        .join(Store, Instance.store_id == Store.id)
        .where(Instance.available, (Instance.store_id + 0).in_(list(store_ids)))
        .order_by(Instance.verified_at, Instance.id)
        .limit(size)
    )
    if names:
        statement = statement.where(File.name.in_(list(names)))
    unverified = []
    if after is None or after[0] is None:
        # None since migration 0006 filled them in; looked for all the same, first.
        never = statement.where(Instance.verified_at.is_(None))
        if after is not None:
            never = never.where(Instance.id > after[1])
        unverified = [Candidate(*row) for row in session.execute(never).all()]
        if len(unverified) >= size:
            return unverified
    statement = statement.where(Instance.verified_at.is_not(None))
    if after is not None and after[0] is not None:
        statement = statement.where(tuple_(Instance.verified_at, Instance.id) > tuple_(*after))
    if due is not None:
        statement = statement.where(Instance.verified_at < due)
    statement = statement.limit(size - len(unverified))
    return unverified + [Candidate(*row) for row in session.execute(statement).all()]


def overdue(session: Session, store_ids: Sequence[int], before: datetime) -> int:
    """Copies in service on ``store_ids`` last verified before ``before`` (up to a cap): one
    range of the ``(verified_at, id)`` index, empty when all is well."""
    if not store_ids:
        return 0
    inner = (
        select(Instance.id)
        .where(
            Instance.verified_at < before,
            Instance.available,
            (Instance.store_id + 0).in_(list(store_ids)),  # see in_service_page
        )
        .limit(OVERDUE_CAP)
        .subquery()
    )
    return session.scalar(select(func.count()).select_from(inner)) or 0


def _area_problem(session: Session, store: LocalStore, store_id: int | None) -> str | None:
    try:
        if not store.store_dir.is_dir():
            return f"store area {store.store_dir} is not there (unmounted?)"
        with os.scandir(store.store_dir) as entries:
            empty = next(entries, None) is None
    except OSError as error:
        return f"store area {store.store_dir}: {error.strerror or error}"
    if empty and store_id is not None and _holds_copies(session, store_id):
        return (
            f"store area {store.store_dir} is empty but the catalogue records copies there "
            "(unmounted?)"
        )
    return None


def _holds_copies(session: Session, store_id: int) -> bool:
    found = session.scalar(
        select(Instance.id).where(Instance.store_id == store_id, Instance.available).limit(1)
    )
    return found is not None


@dataclass
class Readability:
    # Store name -> catalogue id, for the stores a pass may read.
    readable: dict[str, int]
    # Store name -> why it cannot be read now (a problem: reported, and it trips the guard).
    problems: dict[str, str]
    # Drives away on their trip: not read, and nothing wrong.
    travelling: list[str]


def readability(
    session: Session, stores: dict[str, LocalStore], settings: LibrarianSettings | None
) -> Readability:
    """Which configured stores a pass may read now, and why the others may not."""
    rows = {row.name: row for row in session.scalars(select(Store))}
    configs = {config.name: config for config in settings.stores} if settings else {}
    result = Readability({}, {}, [])
    for name, store in stores.items():
        row = rows.get(name)
        config = configs.get(name)
        if config is not None and config.kind == StoreKind.SNEAKER and settings is not None:
            problem, travelling = drive_verdict(config, settings.name, row)
            if travelling:
                result.travelling.append(name)
                continue
            if problem is not None:
                result.problems[name] = f"drive: {problem}"
                continue
        problem = _area_problem(session, store, row.id if row else None)
        if problem is not None:
            result.problems[name] = problem
        elif row is not None:
            result.readable[name] = row.id
    for name, row in rows.items():  # stores are few: one indexed look-up each
        if name not in stores and _holds_copies(session, row.id):
            result.problems[name] = (
                "not in the configuration; its copies in service cannot be verified"
            )
    return result
