"""``checksums_match``: the asset check on ``book`` that re-reads stored copies.

It compares copies with the checksum taken at ingest, least recently verified first (or the
books named in its config), a bounded number per execution, through
``services.integrity.verify_instances``, which records what it finds. The check **fails
while any corrupt-copy record is open**, not only when this execution found one: a bad copy
is taken out of service, so a check that looked only at copies in service would pass on the
next execution over a book that is still damaged. Each execution also re-reads known-bad
copies, so one an operator restored closes its record and the check goes green again.

Where the UI shows it:

- the check (on the ``book`` asset) is failed, with the bad copies in its metadata and each
  one logged at ERROR (``CORRUPT: …``); its run fails too (after the evaluation is
  recorded), so the runs list is not green over a damaged book;
- a scheduled pass that finds nothing bad but copies not re-verified within
  ``period_days`` (the pass is behind) is a **warning**, not a pass: the check is failed at
  WARN severity (its run succeeds), with an ``integrity_behind`` alert that the first pass
  to find none overdue resolves;
- the damaged book's **partition** gets an ``AssetObservation`` (``copy: corrupt``, store,
  reason, checksums), and another (``copy: repaired``) when it verifies again. An
  observation, not a per-partition check, because Dagster 1.13's partitioned asset checks
  are a preview that could not be executed against an asset spec (``book`` is one: its
  bytes are never recomputed); an observation is the partition-level record the UI shows on
  the partition's page without claiming a new materialization.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.services import corrupt
from librarian_dagster.services.events import resolve_cause
from librarian_dagster.services.integrity import BadCopy, Budget, VerifyReport, verify_instances
from librarian_dagster.services.integrity_guard import GuardPolicy
from librarian_dagster.states import Severity

REPORTED = 20
CORRUPT_ALERT = "corrupt_copies"
BEHIND_ALERT = "integrity_behind"
CHECK_NAME = "checksums_match"


class ChecksumCheckConfig(dg.Config):
    names: list[str] = Field(
        default=[], description="Books to verify; empty = the least recently verified."
    )
    max_books: int = Field(default=20, ge=1, description="Upper bound per execution.")
    scheduled: bool = Field(
        default=False,
        description=(
            "Read the copies that are due, within [integrity]'s byte and time budget "
            "(what the verify_integrity schedule asks for); max_books is then ignored."
        ),
    )


def _bad_json(bad: list[BadCopy]) -> list[dict[str, object]]:
    return [
        {
            "name": copy.name,
            "store": copy.store,
            "reason": copy.reason.value,
            "expected": copy.expected,
            "found": copy.found,
        }
        for copy in bad
    ]


def _observations(context: dg.AssetCheckExecutionContext, report: VerifyReport) -> None:
    """One observation on each affected book's partition: what the check found there."""
    for copy in report.bad:
        context.op_execution_context.log_event(
            dg.AssetObservation(
                asset_key=BOOK_KEY,
                partition=copy.name,
                metadata={
                    "copy": "corrupt",
                    "store": copy.store,
                    "reason": copy.reason.value,
                    "expected": copy.expected,
                    "found": copy.found or "-",
                },
            )
        )
    for name in report.repaired:
        context.op_execution_context.log_event(
            dg.AssetObservation(asset_key=BOOK_KEY, partition=name, metadata={"copy": "repaired"})
        )


def _alerts(
    context: dg.AssetCheckExecutionContext,
    notifier: NotifierResource,
    report: VerifyReport,
    overdue_counted: bool,
) -> None:
    """Tell operators (grouped by cause: see ``resources.notifier``)."""
    for store, event_id in report.guard_events.items():
        where = notifier.announce(
            event_id,
            f"Burst guard up on store {store}",
            f"{report.guarded[store]}. Automatic repair and deletion are off for {store} "
            f"until event {event_id} is resolved (librarian events resolve {event_id} "
            "--note ...) once the storage is sound.",
        )
        context.log.error(f"BURST GUARD: store {store}: {report.guarded[store]} ({where})")
    new = [copy for copy in report.bad if copy.new]
    for store in sorted({copy.store for copy in new}):  # one cause per store
        found = [copy for copy in new if copy.store == store]
        listed = "\n".join(copy.line() for copy in found[:REPORTED])
        more = f"\n... and {len(found) - REPORTED} more" if len(found) > REPORTED else ""
        notifier.alert(
            f"{len(found)} corrupt or missing cop{'y' if len(found) == 1 else 'ies'} in store "
            f"{store}",
            f"{listed}{more}\n`librarian corrupt list` shows every open one.",
            severity=Severity.CRITICAL,
            kind=CORRUPT_ALERT,
            subject=store,
        )
    # A store with no open record any more: its alert is over; the next bad copy is news.
    with notifier.session() as session:
        for store in set(report.read_by_store) - corrupt.stores_with_open_records(session):
            resolve_cause(session, CORRUPT_ALERT, store, "checksums_match", "all repaired")
    if report.overdue:
        notifier.alert(
            "Integrity checks are behind",
            _behind(report),
            severity=Severity.WARNING,
            kind=BEHIND_ALERT,
            subject=CHECK_NAME,
        )
    elif overdue_counted:  # counted and none: caught up
        with notifier.session() as session:
            for subject in (CHECK_NAME, None):  # None: raised before it had a subject
                resolve_cause(session, BEHIND_ALERT, subject, CHECK_NAME, "caught up")


def _behind(report: VerifyReport) -> str:
    return (
        f"{report.overdue} copies were not re-verified within [integrity] period_days; "
        "raise max_bytes_per_run or max_seconds_per_run, or check the disks' read rate."
    )


@dg.asset_check(
    asset=BOOK_KEY,
    name=CHECK_NAME,
    description=(
        "Re-read stored copies and compare with the checksum taken at ingest. Fails while any "
        "copy is known corrupt or missing, until it is repaired or dismissed; warns while "
        "the scheduled passes are behind (copies not re-verified within period_days)."
    ),
)
def checksums_match(
    context: dg.AssetCheckExecutionContext,
    config: ChecksumCheckConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
    notifier: NotifierResource,
) -> Iterator[dg.AssetCheckResult]:
    settings = catalogue.settings
    budget = (
        Budget.scheduled(settings)
        if config.scheduled and not config.names
        else Budget(max_books=config.max_books)
    )
    policy = GuardPolicy(settings.integrity.max_bad_fraction, settings.integrity.burst_min_bad)
    report = verify_instances(
        catalogue.catalogue,
        stores.all(),
        names=config.names,
        budget=budget,
        settings=settings,
        policy=policy,
    )
    context.log.info(report.summary())
    for copy in report.bad:
        context.log.error(copy.line())
    for name in report.repaired:
        context.log.info(f"REPAIRED: {name} verifies again")
    for store, problem in report.unreadable_stores.items():
        context.log.error(f"UNREADABLE STORE: {store}: {problem}; its copies were not read")
    if report.unresolved:
        context.log.error(
            f"{report.unresolved} corrupt copies unresolved (e.g. "
            f"{', '.join(report.unresolved_names)}); `librarian corrupt list` shows them"
        )
    _observations(context, report)
    _alerts(context, notifier, report, budget.overdue_before is not None)
    # Behind (every copy read was good, but some were not read in time): a warning, not green.
    behind = report.passed and report.overdue > 0
    yield dg.AssetCheckResult(
        passed=report.passed and not behind,
        severity=dg.AssetCheckSeverity.WARN if report.passed else dg.AssetCheckSeverity.ERROR,
        description=_behind(report) if behind else None if report.passed else report.summary(),
        metadata={
            "verified": len(report.good),
            "bad": dg.MetadataValue.json(_bad_json(report.bad)),
            "repaired": dg.MetadataValue.json(report.repaired),
            "unresolved corrupt copies": report.unresolved,
            "unresolved (first)": dg.MetadataValue.json(report.unresolved_names),
            "unreadable stores": dg.MetadataValue.json(report.unreadable_stores),
            "guarded stores": dg.MetadataValue.json(report.guarded),
            "drives travelling (not read)": dg.MetadataValue.json(report.travelling),
            "overdue copies": report.overdue,
            "stopped by": report.stopped or "-",
            "bytes": report.bytes_read,
            "seconds": round(report.seconds, 3),
            "MB/s": round(report.bytes_read / 1e6 / report.seconds, 1) if report.seconds else 0,
        },
    )
    if not report.passed:
        # The evaluation above is recorded (the check shows Failed); failing the step as
        # well keeps its run from showing a green "Success" over a damaged book.
        raise dg.Failure(description=report.summary())


ASSET_CHECKS = [checksums_match]
