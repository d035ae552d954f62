"""``verify_integrity``: the scheduled pass that re-reads stored copies.

The job runs the ``book`` asset's ``checksums_match`` check (``assets.integrity``) with
``scheduled: true``: copies due for a re-read, oldest-verified first, within
``[integrity]``'s byte and time budget, with the burst guard on. Its evaluation is the
check's history in the UI; a pass that found a bad copy, or left one unrepaired, fails.
Launching it by hand (launchpad, ``dagster job launch -j verify_integrity``) does the same
pass; ``scheduled: false`` with ``names`` re-reads given books.

``repair_copies`` (asked for by ``repair_sensor``): for corrupt copies on stores whose
burst guard is down, a good copy in another store here is copied over the bad one
(``services.integrity_repair_local``, each repair observed on the book's partition);
failing that, a peer whose copy verifies now is asked to send it again
(``services.integrity_repair``); the clone pipeline brings it, and ingest replaces the bad
copy once the new one verifies. Books nobody can repair fail the run and alert.

``rolling_cleanup`` (hourly, ``rolling_cleanup_schedule``): each rolling store deletes its
books past the limit that enough peers verified at that moment
(``services.integrity_rolling``); books kept are listed with why, and an alert says so.

The pass's runs carry ``librarian/kind: integrity``, which the run queue limits to one at a
time: one reader, large sequential reads, the disks left to ingest between passes. Repair
(``repair``) and rolling cleanup (``maintenance``) have kinds of their own, so neither
waits behind a 55-minute pass nor holds the callbacks' slot; their schedule and sensor ask
for one run at a time.
"""

import dagster as dg

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.assets.integrity import checksums_match
from librarian_dagster.jobs.names import (
    INTEGRITY_KIND,
    KIND_TAG,
    MAINTENANCE_KIND,
    REPAIR_JOB,
    REPAIR_KIND,
    REPAIR_OP,
    ROLLING_JOB,
    ROLLING_OP,
    VERIFY_JOB,
    VERIFY_OP,
)
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.resources.peers import PeersResource
from librarian_dagster.services.integrity_repair import request_repairs
from librarian_dagster.services.integrity_rolling import clean_store, rolling_stores
from librarian_dagster.states import Severity

verify_integrity = dg.define_asset_job(
    VERIFY_JOB,
    selection=dg.AssetSelection.checks(checksums_match),
    description=(
        "Re-read stored copies that are due (every copy within [integrity] period_days), "
        "record bad ones, alert, and guard a store with a burst of them."
    ),
    tags={KIND_TAG: INTEGRITY_KIND},
    config={"ops": {VERIFY_OP: {"config": {"scheduled": True}}}},
)


@dg.op(name=REPAIR_OP, out=dg.Out(dg.Nothing))
def ask_peers_to_resend(
    context: dg.OpExecutionContext,
    catalogue: CatalogueResource,
    stores: StoresResource,
    peers: PeersResource,
    notifier: NotifierResource,
) -> None:
    report = request_repairs(
        catalogue.catalogue, catalogue.settings, peers.links(), stores=stores.all()
    )
    for name, source in report.repaired:
        context.log.info(f"REPAIRED: {name} from the good copy in store {source}")
        context.log_event(
            dg.AssetObservation(
                asset_key=BOOK_KEY,
                partition=name,
                metadata={"copy": "repaired", "from": f"store {source}"},
            )
        )
    for name, peer in report.requested:
        context.log.info(f"{name}: {peer} verified its copy and will send it again")
    for name, why in report.waiting:
        context.log.warning(f"{name}: no peer could be asked ({why}); asked again later")
    for name, why in report.lost:
        context.log.error(f"LOST: {name} cannot be repaired automatically: {why}")
    context.add_output_metadata(
        {
            "repaired here": len(report.repaired),
            "requested": len(report.requested),
            "waiting": len(report.waiting),
            "lost": dg.MetadataValue.json([name for name, _ in report.lost[:100]]),
        }
    )
    if report.lost:
        listed = "\n".join(f"{name}: {why}" for name, why in report.lost[:20])
        notifier.alert(
            f"{len(report.lost)} corrupt cop{'y' if len(report.lost) == 1 else 'ies'} "
            "cannot be repaired from a peer",
            f"{listed}\nThe bad copies are kept, out of service; an operator must act.",
            severity=Severity.CRITICAL,
            kind="copy_lost",
        )
        raise dg.Failure(description=f"{len(report.lost)} books cannot be repaired")


@dg.job(
    name=REPAIR_JOB,
    tags={KIND_TAG: REPAIR_KIND},
    description="Ask peers whose copies verify to re-send books whose copies here are bad.",
)
def repair_copies() -> None:
    ask_peers_to_resend()


@dg.op(name=ROLLING_OP, out=dg.Out(dg.Nothing))
def delete_old_copies(
    context: dg.OpExecutionContext,
    catalogue: CatalogueResource,
    stores: StoresResource,
    peers: PeersResource,
    notifier: NotifierResource,
) -> None:
    settings = catalogue.settings
    deleted: dict[str, int] = {}
    kept: dict[str, list[str]] = {}
    for name in rolling_stores(settings):
        report = clean_store(catalogue.catalogue, settings, stores.all(), peers.links(), name)
        context.log.info(report.summary())
        for book, why in report.kept:
            context.log.warning(f"KEPT: {book} in store {name}: {why}")
        deleted[name] = len(report.deleted)
        kept[name] = [f"{book}: {why}" for book, why in report.kept]
        if report.skipped:
            context.log.warning(report.summary())
        if report.kept:
            listed = "\n".join(kept[name][:20])
            notifier.alert(
                f"Rolling store {name} kept {len(report.kept)} books past its limit",
                f"{listed}\nThey are deleted once enough peers verify their copies.",
                severity=Severity.WARNING,
                kind="rolling_kept",
                subject=name,
            )
    context.add_output_metadata(
        {
            "deleted": dg.MetadataValue.json(deleted),
            "kept (first)": dg.MetadataValue.json({k: v[:50] for k, v in kept.items()}),
        }
    )


@dg.job(
    name=ROLLING_JOB,
    tags={KIND_TAG: MAINTENANCE_KIND},
    description="Delete, on rolling stores, books past the limit that peers verified just now.",
)
def rolling_cleanup() -> None:
    delete_old_copies()


JOBS = [verify_integrity, repair_copies, rolling_cleanup]
