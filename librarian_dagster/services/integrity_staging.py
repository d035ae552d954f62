"""Leftover staging: what failed or cancelled transfers left behind, and what nobody knows.

A transfer that fails or is cancelled removes its staging directory once that outcome has
committed; a crash in between, or a removal that failed (a file another user owns on a
shared file system), leaves it behind. ``clean_staging`` (the ``clean_staging`` run)
looks at staging directories untouched for ``MIN_AGE`` and, per directory:

- a failed or cancelled upload, clone or drive book: removed (the uploader, the sender or
  the drive holds the original; the transfer's failure is already recorded);
- an inbox book that failed: kept, reported (the inbox's failure path keeps its data in
  staging on purpose: it may be the only copy);
- a transfer still pending: kept (it is someone's work in progress);
- a stored transfer: kept, reported (its data is in the store; what is left needs a look);
- a directory no transfer knows: kept, reported (never delete what we cannot account for).

A bad copy a repair set aside and could not remove or put back (``storage.quarantine``)
is reported too, never deleted.

What a run reports (kept and reported, or not removable) is the store's count of leftover
staging: an open ``staging_leftovers`` event per store holds it (``details.leftovers``,
the event's ``last_at`` says when it was counted) and is resolved by a run that finds
none. ``/ping`` reads that count (``leftover_counts``), one indexed query, instead of
walking every staging tree on a public, often probed route.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Event, IncomingTransfer
from librarian_dagster.services.events import raise_event, resolve_cause
from librarian_dagster.states import Severity, TransferKind, TransferStatus
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.quarantine import QUARANTINE_DIRNAME

MIN_AGE = 3600.0
REMOVABLE_KINDS = (TransferKind.UPLOAD, TransferKind.CLONE, TransferKind.SNEAKER)
ENDED = (TransferStatus.FAILED, TransferStatus.CANCELLED)


@dataclass
class StagingReport:
    store: str
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    # (staging id, why it was kept and reported)
    reported: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


STAGING_KIND = "staging_leftovers"


def clean_staging(
    catalogue: Catalogue, store: LocalStore, min_age: float | None = None
) -> StagingReport:
    """Remove what ended transfers left in ``store``'s staging, report the rest, record
    how many are left (see module)."""
    report = _clean(catalogue, store, min_age)
    left = len(report.reported) + len(report.failed)
    with catalogue.session() as session:
        if not left:
            resolve_cause(session, STAGING_KIND, store.name, "staging sweep", "none left")
            return report
        first = (report.failed or report.reported)[0]
        raise_event(
            session,
            Severity.WARNING,
            STAGING_KIND,
            f"{left} staging directories left in store {store.name} "
            f"(first: {first[0]}: {first[1]}); see the clean_staging run's log",
            subject=store.name,
            details={"leftovers": left},
        )
    return report


def leftover_counts(session: Session) -> dict[str, int]:
    """Store name → leftover staging its last ``clean_staging`` reported (0 if none)."""
    return {
        str(subject): int((details or {}).get("leftovers", 0))
        for subject, details in session.execute(
            select(Event.subject, Event.details).where(
                Event.kind == STAGING_KIND, Event.resolved.is_(False)
            )
        )
    }


def _clean(catalogue: Catalogue, store: LocalStore, min_age: float | None) -> StagingReport:
    report = StagingReport(store.name)
    quarantine = store.root / QUARANTINE_DIRNAME
    if quarantine.is_dir():
        for entry in sorted(quarantine.iterdir()):
            report.reported.append((f"quarantine/{entry.name}", "a copy a repair set aside"))
    leftovers = store.leftover_staging(MIN_AGE if min_age is None else min_age)
    if not leftovers:
        return report
    with catalogue.session() as session:
        transfers = {
            row.staging_id: (row.id, row.kind, row.status)
            for row in session.scalars(
                select(IncomingTransfer).where(
                    IncomingTransfer.staging_id.in_([item.staging_id for item in leftovers])
                )
            )
        }
    for leftover in leftovers:
        known = transfers.get(leftover.staging_id)
        if known is None:
            report.reported.append((leftover.staging_id, "no transfer knows it"))
            continue
        transfer_id, kind, status = known
        if status in ENDED and kind in REMOVABLE_KINDS:
            try:
                store.discard_staging(leftover.staging_id)
            except OSError as error:
                report.failed.append((leftover.staging_id, error.strerror or str(error)))
                continue
            report.removed.append(leftover.staging_id)
            report.removed_bytes += leftover.bytes
        elif status in ENDED:
            report.reported.append(
                (leftover.staging_id, f"{kind.value} transfer {transfer_id} {status.value}: kept")
            )
        elif status == TransferStatus.STORED:
            report.reported.append(
                (leftover.staging_id, f"transfer {transfer_id} is stored, yet this is left")
            )
    return report
