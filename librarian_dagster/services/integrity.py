"""Re-verify stored copies against the checksum taken at ingest.

Called by the ``checksums_match`` asset check, which the ``verify_integrity`` job runs on a
schedule and anyone may run from the UI. Each pass re-reads, least recently verified first
(``services.integrity_slice``), copies in service *and* the copies already known bad, so
that a copy an operator restored is found good again. A pass is bounded by a number of
books, and a scheduled one also by bytes and seconds and to copies that are due:

- a good copy gets a fresh ``verified_at`` (written for ``GOOD_BATCH`` copies at a time: a
  crash loses only the dates, and those copies are read again); a known-bad one that
  verifies again is put back in service and its record closed
  (``services.corrupt.close_repaired``);
- a bad copy (bytes differ, gone, unreadable) is taken out of service and gets one open
  corrupt-copy record and an operator event, in one transaction; nothing is deleted;
- a store that cannot be read is not read at all and is reported, and its copies are not
  candidates: bad storage must neither turn every copy on it into a "missing" record nor
  use up the budget that copies elsewhere need. With a guard policy, such a store, a store
  with a burst of bad copies, or one that fails ``FAILING_STREAK`` reads in a row, is
  guarded (``services.integrity_guard``): no automatic repair or deletion there.

The report counts the records still open after the pass, whichever copies it read: the
check stays failed until every bad copy is repaired or dismissed. Paths are re-derived from
the store and the name, never taken from the row as given. One reader, large sequential
reads: each file is read in 1 MiB chunks with ``POSIX_FADV_SEQUENTIAL`` (the kernel's
readahead keeps the disk busy while a chunk is hashed). A second thread reading ahead was
tried and measured no faster from disk and slower from memory (``benchmarks/README.md``,
Integrity), so there is none.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import true, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Instance
from librarian_dagster.services import corrupt
from librarian_dagster.services.events import record_event
from librarian_dagster.services.integrity_guard import (
    FAILING_STREAK,
    GuardPolicy,
    burst_reason,
    trip,
)
from librarian_dagster.services.integrity_slice import (
    PAGE,
    Candidate,
    due_before,
    in_service_page,
    known_bad,
    overdue,
    readability,
)
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import CorruptionReason, Severity
from librarian_dagster.storage.checksums import Checksum, ChecksumError, hash_path
from librarian_dagster.storage.local_store import LocalStore

# How many names of books still corrupt a report carries (the count is exact).
REPORTED_NAMES = 20
# Good copies' verified_at is written every this many copies or seconds (one transaction).
GOOD_BATCH = 64
GOOD_SECONDS = 5.0


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


@dataclass(frozen=True)
class Budget:
    """What one pass may read: books always; bytes, seconds and due-ness when scheduled."""

    max_books: int = 20
    max_bytes: int | None = None
    max_seconds: float | None = None
    # Read only copies in service verified longer ago than this (None: any, oldest first).
    due_before: datetime | None = None
    # Copies verified longer ago than this are overdue (reported; None: not counted).
    overdue_before: datetime | None = None

    @classmethod
    def scheduled(cls, settings: LibrarianSettings, now: datetime | None = None) -> Budget:
        """The budget of a scheduled pass, from ``[integrity]``."""
        now = now or datetime.now(UTC)
        policy = settings.integrity
        return cls(
            max_books=policy.max_books_per_run,
            max_bytes=policy.max_bytes_per_run,
            max_seconds=policy.max_seconds_per_run,
            due_before=due_before(now, policy.period_days),
            overdue_before=now - timedelta(days=policy.period_days),
        )


@dataclass
class VerifyReport:
    good: list[str] = field(default_factory=list)
    bad: list[BadCopy] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    # Stores not read because they cannot be, with the reason.
    unreadable_stores: dict[str, str] = field(default_factory=dict)
    # Drives away on their trip: not read, nothing wrong.
    travelling: list[str] = field(default_factory=list)
    # Per store: copies in service read in this pass, and how many of them were newly bad.
    read_by_store: dict[str, int] = field(default_factory=dict)
    new_bad_by_store: dict[str, int] = field(default_factory=dict)
    # Stores guarded by this pass (store -> why), their guard events, and those newly up.
    guarded: dict[str, str] = field(default_factory=dict)
    guard_events: dict[str, int] = field(default_factory=dict)
    new_guards: list[str] = field(default_factory=list)
    # Open corrupt-copy records after this execution (all of them, not just those read now).
    unresolved: int = 0
    unresolved_names: list[str] = field(default_factory=list)
    # Copies in service not verified within the period (scheduled passes; capped count).
    overdue: int = 0
    # Why the pass stopped before every candidate was read ("" if it did not).
    stopped: str = ""
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


def read_copy(
    path: Path, expected: Checksum
) -> tuple[Checksum | None, CorruptionReason | None, str]:
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


def record_read(
    catalogue: Catalogue,
    candidate: Candidate,
    found: Checksum | None,
    reason: CorruptionReason | None,
    detail: str,
    report: VerifyReport,
) -> bool:
    """Write what one read found, in one transaction; True if it is a newly bad copy.

    The copy's row is locked and its open record looked up again under the lock: two
    executions that read the same bad copy at once (a schedule and a click) open one record
    and one event between them, and the second reports it as already known.
    """
    with catalogue.session() as session:
        instance = session.get(Instance, candidate.instance_id, with_for_update=True)
        if instance is None:
            return False  # deleted meanwhile
        record = corrupt.open_record(session, instance.id)
        if reason is None:
            if record is not None:
                corrupt.close_repaired(session, record, instance)
                report.repaired.append(candidate.name)
            else:
                instance.verified_at = datetime.now(UTC)
            report.good.append(candidate.name)
            return False
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
                details={"record_id": record.id, "store": candidate.store},
            )
        report.bad.append(
            BadCopy(candidate.name, candidate.store, reason, candidate.checksum, actual, new=new)
        )
        return new


class _Pass:
    """One pass's reading loop: budgets, per-store tallies, failing stores."""

    def __init__(
        self,
        catalogue: Catalogue,
        stores: dict[str, LocalStore],
        budget: Budget,
        policy: GuardPolicy | None = None,
    ) -> None:
        self.catalogue, self.stores, self.budget, self.policy = catalogue, stores, budget, policy
        # Stores guarded during the pass: their guard event, and whether it is new.
        self.tripped: dict[str, tuple[int, bool]] = {}
        self.report = VerifyReport()
        self.started = time.monotonic()
        self.read = 0
        self.done: set[int] = set()
        self.streaks: dict[str, int] = {}
        self.failing: dict[str, str] = {}
        # Copies in service found good, not yet written (one UPDATE per GOOD_BATCH).
        self.good: list[int] = []
        self.flushed = time.monotonic()

    def flush(self) -> None:
        """Write the good copies' ``verified_at`` in one transaction. A crash before it
        loses only that: those copies are read again by a later pass."""
        if not self.good:
            return
        with self.catalogue.session() as session:
            session.execute(
                update(Instance)
                .where(Instance.id.in_(self.good), Instance.available == true())
                .values(verified_at=datetime.now(UTC))
                .execution_options(synchronize_session=False)
            )
        self.good, self.flushed = [], time.monotonic()

    def out_of_budget(self, candidate: Candidate) -> str:
        budget = self.budget
        if self.read >= budget.max_books:
            return f"book limit ({budget.max_books})"
        if budget.max_seconds is not None and time.monotonic() - self.started > budget.max_seconds:
            return f"time budget ({budget.max_seconds:g} s)"
        over = self.report.bytes_read + candidate.size > (budget.max_bytes or 0)
        if budget.max_bytes is not None and self.read and over:
            return f"byte budget ({budget.max_bytes} bytes)"
        return ""

    def read_one(self, candidate: Candidate) -> None:
        store = self.stores[candidate.store]
        expected = Checksum.parse(candidate.checksum)
        found, reason, detail = read_copy(store.path_for(candidate.name), expected)
        self.read += 1
        self.done.add(candidate.instance_id)
        self.report.bytes_read += candidate.size
        if reason is None and not candidate.known_bad:
            # Good and in service: nothing to decide under a lock; written in batches.
            self.report.good.append(candidate.name)
            self.good.append(candidate.instance_id)
            if len(self.good) >= GOOD_BATCH or time.monotonic() - self.flushed > GOOD_SECONDS:
                self.flush()
            new = False
        else:
            new = record_read(self.catalogue, candidate, found, reason, detail, self.report)
        if candidate.known_bad:
            return
        report = self.report
        report.read_by_store[candidate.store] = report.read_by_store.get(candidate.store, 0) + 1
        if new:
            report.new_bad_by_store[candidate.store] = (
                report.new_bad_by_store.get(candidate.store, 0) + 1
            )
        gone = reason in (CorruptionReason.MISSING, CorruptionReason.UNREADABLE)
        streak = self.streaks[candidate.store] = (
            self.streaks.get(candidate.store, 0) + 1 if gone else 0
        )
        if streak >= FAILING_STREAK and candidate.store not in self.failing:
            why = (
                f"{streak} copies in a row could not be read (last: {detail}); "
                "the rest of the store was not read"
            )
            self.failing[candidate.store] = why
            if self.policy is not None:  # at once: repair must not start on it meanwhile
                with self.catalogue.session() as session:
                    raised = trip(session, candidate.store, why)
                    self.tripped[candidate.store] = (raised.event.id, raised.new)


def _in_service(
    catalogue: Catalogue, names: Sequence[str], run: _Pass, readable: dict[str, int]
) -> Iterator[Candidate]:
    """Copies in service to read, page by page, until none is left or one comes round again
    (a copy verified in this pass moves to the back of the order)."""
    after: tuple[datetime | None, int] | None = None
    while True:
        store_ids = [id_ for name, id_ in readable.items() if name not in run.failing]
        with catalogue.session() as session:
            page = in_service_page(
                session, names, store_ids, due=run.budget.due_before, after=after, size=PAGE
            )
        if not page:
            return
        for candidate in page:
            after = (candidate.verified_at, candidate.instance_id)
            if candidate.instance_id in run.done:
                return
            yield candidate


def verify_instances(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    *,
    names: Sequence[str] = (),
    limit: int = 20,
    budget: Budget | None = None,
    settings: LibrarianSettings | None = None,
    policy: GuardPolicy | None = None,
) -> VerifyReport:
    """One pass (see the module). ``settings`` lets drives be judged by their identity;
    ``policy`` turns the burst guard on."""
    budget = budget or Budget(max_books=limit)
    run = _Pass(catalogue, stores, budget, policy)
    report = run.report
    with catalogue.session() as session:
        seen = readability(session, stores, settings)
        report.unreadable_stores, report.travelling = seen.problems, seen.travelling
        bad_limit = budget.max_books if names else max(1, budget.max_books // 2)
        first = known_bad(session, names, list(seen.readable), bad_limit)
    for candidate in itertools.chain(first, _in_service(catalogue, names, run, seen.readable)):
        if candidate.store in run.failing:
            continue
        report.stopped = run.out_of_budget(candidate)
        if report.stopped:
            break
        run.read_one(candidate)
    run.flush()
    report.unreadable_stores.update(run.failing)
    with catalogue.session() as session:
        if policy is not None:
            _guard(session, report, policy, run)
        if budget.overdue_before is not None:
            store_ids = [id_ for name, id_ in seen.readable.items() if name not in run.failing]
            report.overdue = overdue(session, store_ids, budget.overdue_before)
        report.unresolved = corrupt.count_unresolved(session)
        report.unresolved_names = corrupt.unresolved_names(session, REPORTED_NAMES)
    report.seconds = time.monotonic() - run.started
    return report


def _guard(session: Session, report: VerifyReport, policy: GuardPolicy, run: _Pass) -> None:
    reasons = dict(report.unreadable_stores)
    for store, read in report.read_by_store.items():
        reason = burst_reason(read, report.new_bad_by_store.get(store, 0), policy)
        if reason is not None and store not in reasons:
            reasons[store] = reason
    for store, reason in reasons.items():
        if store in run.tripped:  # guarded during the pass already
            event_id, new = run.tripped[store]
        else:
            raised = trip(session, store, reason)
            event_id, new = raised.event.id, raised.new
        report.guarded[store] = reason
        report.guard_events[store] = event_id
        if new:
            report.new_guards.append(store)
