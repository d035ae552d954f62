"""Re-verify stored copies against the checksum taken at ingest.

Called by the ``checksums_match`` asset check (and, later, the scheduled integrity job). Each
execution re-reads, least recently first, a bounded number of copies in service *and* of the
copies already known bad, so that a copy an operator restored is found good again:

- a good copy gets a fresh ``verified_at``; a known-bad one that verifies again is put back in
  service and its record closed (``services.corrupt.close_repaired``);
- a bad copy (bytes differ, gone, unreadable) is taken out of service and gets one open
  corrupt-copy record and an operator event, in one transaction; nothing is deleted;
- a store that cannot be read (its store area gone, or empty while the catalogue records
  copies there: an unmounted drive's bare mount point) is not read at all and is reported,
  and its copies are not candidates: bad storage must neither turn every copy on it into a
  "missing" record nor use up the budget that copies elsewhere need. So is a store dropped
  from the configuration while the catalogue records copies in service there.

The report counts the records still open after the execution, whichever copies it read: the
check stays failed until every bad copy is repaired or dismissed. Paths are re-derived from
the store and the name, never taken from the row as given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import CorruptFile, File, Instance, Store
from librarian_dagster.services import corrupt
from librarian_dagster.services.events import record_event
from librarian_dagster.states import UNRESOLVED_CORRUPTION, CorruptionReason, Severity
from librarian_dagster.storage.checksums import Checksum, ChecksumError, hash_path
from librarian_dagster.storage.local_store import LocalStore

# How many names of books still corrupt a report carries (the count is exact).
REPORTED_NAMES = 20


@dataclass(frozen=True)
class BadCopy:
    name: str
    store: str
    reason: CorruptionReason
    expected: str
    found: str | None
    # False: the copy was already known bad and is still bad (no new record, no new event).
    new: bool

    def line(self) -> str:
        found = f", found {self.found}" if self.found else ""
        known = "" if self.new else " (still; known since an earlier check)"
        return (
            f"CORRUPT: {self.name} in store {self.store}: {self.reason.value}"
            f" (expected {self.expected}{found}){known}"
        )


@dataclass
class VerifyReport:
    good: list[str] = field(default_factory=list)
    bad: list[BadCopy] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    # Stores not read because their root is not there, with the reason.
    unreadable_stores: dict[str, str] = field(default_factory=dict)
    # Open corrupt-copy records after this execution (all of them, not just those read now).
    unresolved: int = 0
    unresolved_names: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.unresolved == 0 and not self.bad and not self.unreadable_stores

    def summary(self) -> str:
        return (
            f"verified {len(self.good)} copies ({self.bytes_read} bytes) in "
            f"{self.seconds:.2f} s; {len(self.bad)} bad, {len(self.repaired)} repaired, "
            f"{self.unresolved} corrupt copies unresolved"
        )


@dataclass(frozen=True)
class _Candidate:
    instance_id: int
    name: str
    checksum: str
    store: str


def _known_bad(
    session: Session, names: Sequence[str], readable: Sequence[str], limit: int
) -> list[_Candidate]:
    """Copies with an open record on a readable store, the longest unread first."""
    statement = (
        select(CorruptFile)
        .join(Instance, CorruptFile.instance_id == Instance.id)
        .join(Store, CorruptFile.store_id == Store.id)
        .where(Store.name.in_(list(readable)))
        .options(
            joinedload(CorruptFile.file),
            joinedload(CorruptFile.store),
        )
        .where(CorruptFile.status.in_(UNRESOLVED_CORRUPTION))
        .order_by(CorruptFile.updated_at, CorruptFile.id)
        .limit(limit)
    )
    if names:
        statement = statement.join(File, CorruptFile.file_id == File.id).where(
            File.name.in_(list(names))
        )
    return [
        _Candidate(
            record.instance_id or 0,
            record.file.name,
            record.file.checksum,
            record.store.name,
        )
        for record in session.scalars(statement).unique().all()
    ]


def _in_service(
    session: Session, names: Sequence[str], readable: Sequence[str], limit: int
) -> list[_Candidate]:
    """Copies in service on a readable store, least recently verified (never verified first)."""
    statement = (
        select(Instance)
        .join(File)
        .join(Store, Instance.store_id == Store.id)
        .options(joinedload(Instance.file), joinedload(Instance.store))
        .where(Instance.available, Store.name.in_(list(readable)))
        .order_by(Instance.verified_at.is_not(None), Instance.verified_at, Instance.id)
        .limit(limit)
    )
    if names:
        statement = statement.where(File.name.in_(list(names)))
    return [
        _Candidate(row.id, row.file.name, row.file.checksum, row.store.name)
        for row in session.scalars(statement).all()
    ]


def _candidates(
    session: Session, names: Sequence[str], readable: Sequence[str], limit: int
) -> list[_Candidate]:
    """Known-bad copies (up to half the budget, at least one) first, then copies in service.

    Only copies on stores that can be read now: a store that cannot must not take the whole
    budget execution after execution while copies elsewhere go unread.
    """
    if not readable:
        return []
    known_bad = _known_bad(session, names, readable, limit if names else max(1, limit // 2))
    room = limit - len(known_bad)
    return known_bad + (_in_service(session, names, readable, room) if room > 0 else [])


def _read(path: Path, expected: Checksum) -> tuple[Checksum | None, CorruptionReason | None, str]:
    """(checksum found, what is wrong, detail): reason None means the copy matches."""
    try:
        found = hash_path(path, expected.algorithm)
    except FileNotFoundError:
        return None, CorruptionReason.MISSING, f"{path} is missing"
    except ChecksumError as error:  # something unsafe appeared inside a stored book
        return None, CorruptionReason.UNREADABLE, str(error)
    except OSError as error:
        return None, CorruptionReason.UNREADABLE, f"{path}: {error.strerror or error}"
    if found == expected:
        return found, None, ""
    return found, CorruptionReason.MISMATCH, f"{path}: expected {expected}, found {found}"


def _store_problem(session: Session, store: LocalStore) -> str | None:
    """Why a configured store cannot be read at all now, or None.

    An unmounted drive usually leaves an empty mount point (and ``serve`` may have recreated
    the empty layout inside it): a store area with no entries at all while the catalogue
    records copies in service there is reported, not taken as "every copy missing".
    """
    try:
        if not store.store_dir.is_dir():
            return f"store area {store.store_dir} is not there (unmounted?)"
        with os.scandir(store.store_dir) as entries:
            empty = next(entries, None) is None
    except OSError as error:
        return f"store area {store.store_dir}: {error.strerror or error}"
    if empty and _holds_copies(session, store.name):
        return (
            f"store area {store.store_dir} is empty but the catalogue records copies there "
            "(unmounted?)"
        )
    return None


def _holds_copies(session: Session, store_name: str) -> bool:
    return (
        session.scalar(
            select(Instance.id)
            .join(Store, Instance.store_id == Store.id)
            .where(Store.name == store_name, Instance.available)
            .limit(1)
        )
        is not None
    )


def _store_problems(session: Session, stores: dict[str, LocalStore]) -> dict[str, str]:
    """Stores whose copies cannot be read now: unreadable ones, and unconfigured ones that
    the catalogue still says hold copies in service (nothing could ever verify those)."""
    problems = {
        name: problem
        for name, store in stores.items()
        if (problem := _store_problem(session, store)) is not None
    }
    orphaned = session.scalars(
        select(Store.name)
        .join(Instance, Instance.store_id == Store.id)
        .where(Instance.available, Store.name.not_in(list(stores)))
        .distinct()
        .limit(REPORTED_NAMES)
    ).all()
    for name in orphaned:
        problems[name] = "not in the configuration; its copies in service cannot be verified"
    return problems


def _record(
    catalogue: Catalogue,
    candidate: _Candidate,
    found: Checksum | None,
    reason: CorruptionReason | None,
    detail: str,
    report: VerifyReport,
) -> None:
    """Write what one read found, in one transaction.

    The copy's row is locked and its open record looked up again under the lock: two
    executions that read the same bad copy at once (a schedule and a click) open one record
    and one event between them, and the second reports it as already known.
    """
    with catalogue.session() as session:
        instance = session.get(Instance, candidate.instance_id, with_for_update=True)
        if instance is None:
            return  # deleted meanwhile
        record = corrupt.open_record(session, instance.id)
        if reason is None:
            if record is not None:
                corrupt.close_repaired(session, record, instance)
                report.repaired.append(candidate.name)
            else:
                instance.verified_at = datetime.now(UTC)
            report.good.append(candidate.name)
            report.bytes_read += instance.file.size
            return
        actual = str(found) if found is not None else None
        new = record is None
        if record is not None:
            record.updated_at = datetime.now(UTC)  # read again: rotate to the back
        else:
            record = corrupt.record_bad_copy(
                session, instance, reason, candidate.checksum, actual, detail
            )
            record_event(
                session,
                Severity.CRITICAL if reason is CorruptionReason.MISMATCH else Severity.ERROR,
                f"copy_{reason.value}",
                f"{detail} (store {candidate.store}, record {record.id})",
                subject=candidate.name,
            )
        report.bad.append(
            BadCopy(candidate.name, candidate.store, reason, candidate.checksum, actual, new=new)
        )


def verify_instances(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    *,
    names: Sequence[str] = (),
    limit: int = 20,
) -> VerifyReport:
    report = VerifyReport()
    started = time.monotonic()
    with catalogue.session() as session:
        report.unreadable_stores = _store_problems(session, stores)
        readable = [name for name in stores if name not in report.unreadable_stores]
        candidates = _candidates(session, names, readable, limit)
    for candidate in candidates:
        store = stores[candidate.store]
        expected = Checksum.parse(candidate.checksum)
        found, reason, detail = _read(store.path_for(candidate.name), expected)
        _record(catalogue, candidate, found, reason, detail, report)
    with catalogue.session() as session:
        report.unresolved = corrupt.count_unresolved(session)
        report.unresolved_names = corrupt.unresolved_names(session, REPORTED_NAMES)
    report.seconds = time.monotonic() - started
    return report
