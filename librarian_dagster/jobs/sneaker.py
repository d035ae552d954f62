"""The SneakerNet jobs: fill a drive at the origin, ingest it at the destination.

- ``fill_sneaker_drive`` (pinned; op ``fill_drive``, config ``store``): copies onto the
  store's drive the books it should carry (``services.sneaker.fill_drive``). Launched by
  ``sneaker_fill_sensor`` as books arrive, or by hand::

      dagster job launch -w <data_dir>/dagster/workspace.yaml -j fill_sneaker_drive \\
        --config-json '{"ops": {"fill_drive": {"config": {"store": "drive1"}}}}'

  A drive that cannot be filled now (away, another drive in its slot, full, in transit,
  disabled) fails the run with the reason and nothing written. When the next book does
  not fit, the operators are alerted (Slack through ``notifier``, else an operator event)
  and the drive is marked full. A run in which a book was refused (its copy here did not
  verify) ends failed after recording what was copied. Its metadata: books, bytes,
  seconds, MB/s, free bytes left, and what is on the drive now.
- ``ingest_sneaker_drive`` (pinned; op ``ingest_drive``): asked for by
  ``sneaker_ingest_sensor`` once ``POST /sneaker/ingest`` recorded a drive's books; copies
  each from the drive, checking it against the manifest, and stores it through the one
  verify-and-commit loop (``services.sneaker_ingest.copy_and_store``), with a ``book``
  materialization per stored book; then delivers the callbacks the origin is owed (the
  outbox sensor retries what it does not take). A refused book fails the run, after the
  others are stored.
"""

import time
from typing import Any

import dagster as dg
from pydantic import Field

from librarian_dagster.jobs.ingest import book_materialization, drop_book_partition
from librarian_dagster.jobs.names import (
    BOOKS_PARTITIONS,
    DRIVE_INGEST_JOB,
    DRIVE_INGEST_KIND,
    DRIVE_INGEST_OP,
    FILL_JOB,
    FILL_KIND,
    FILL_OP,
    KIND_TAG,
)
from librarian_dagster.jobs.run_liveness import run_is_active
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.resources.peers import PeersResource
from librarian_dagster.services import sneaker
from librarian_dagster.services.errors import ServiceError
from librarian_dagster.services.ingest import IngestOutcome
from librarian_dagster.services.integrity_stuck import clear_stuck
from librarian_dagster.services.outbox_delivery import deliver
from librarian_dagster.services.sneaker_copy import copy_and_store, pending_books
from librarian_dagster.states import Severity
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.units import human_size

# Book names the metadata lists (counts are whole).
LISTED = 100
# While one large book is copied off a drive, a log line this often (seconds).
BYTES_PROGRESS_EVERY = 300.0


class FillConfig(dg.Config):
    store: str = Field(description="The sneaker store (drive) to fill, as named in the config.")


def _metadata(report: sneaker.FillReport) -> dict[str, Any]:
    return {
        "store": report.store,
        "drive": report.drive_uuid,
        "books": dg.MetadataValue.int(len(report.copied) + len(report.adopted)),
        "bytes": dg.MetadataValue.int(report.bytes),
        "size (human)": human_size(report.bytes),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "MB/s": dg.MetadataValue.float(round(report.mb_per_second, 1)),
        "free bytes": dg.MetadataValue.int(report.free_bytes),
        "free (human)": human_size(report.free_bytes),
        "books on the drive": dg.MetadataValue.int(report.books_on_drive),
        "bytes on the drive": dg.MetadataValue.int(report.bytes_on_drive),
        "full": dg.MetadataValue.bool(report.full),
        "did not fit": report.did_not_fit or "",
        "copied": dg.MetadataValue.json(report.copied[:LISTED]),
        "found from an interrupted fill": dg.MetadataValue.json(report.adopted[:LISTED]),
        "left for a later fill": dg.MetadataValue.json(
            [f"{name}: {why}" for name, why in report.held[:LISTED]]
        ),
        "refused": dg.MetadataValue.json([f"{name}: {why}" for name, why in report.refused]),
        "larger than the drive": dg.MetadataValue.json(
            [f"{name}: {size} bytes" for name, size in report.too_big[:LISTED]]
        ),
    }


def full_alert(report: sneaker.FillReport) -> tuple[str, str]:
    """The title and text operators get when a drive is full."""
    title = f"Drive {report.store} is full"
    text = (
        f"Store {report.store} (drive {report.drive_uuid}) holds {report.books_on_drive} books, "
        f"{human_size(report.bytes_on_drive)} ({report.bytes_on_drive} bytes); "
        f"{report.did_not_fit} does not fit in the {human_size(report.free_bytes)} left. "
        f"Write its manifest and ship it: librarian sneaker manifest --store {report.store} "
        "--out MANIFEST.json"
    )
    return title, text


@dg.op(name=FILL_OP, tags={KIND_TAG: FILL_KIND}, out=dg.Out(dg.Nothing))
def fill_drive_op(
    context: dg.OpExecutionContext,
    config: FillConfig,
    catalogue: CatalogueResource,
    notifier: NotifierResource,
) -> None:
    def alert(report: sneaker.FillReport) -> None:
        title, text = full_alert(report)
        where = notifier.alert(
            title, text, severity=Severity.WARNING, subject=report.store, kind="drive_full"
        )
        context.log.warning(f"{title}: {text} (alert sent to {where})")

    try:
        report = sneaker.fill_drive(
            catalogue.catalogue,
            catalogue.settings,
            config.store,
            on_full=alert,
            log=context.log.info,
        )
    except (sneaker.DriveRefused, StoreError) as refused:
        context.log.error(str(refused))
        raise dg.Failure(description=str(refused)) from None
    with catalogue.session() as session:  # it ran to its end: earlier stalls are over
        clear_stuck(session, FILL_JOB, config.store)
    context.log.info(report.summary())
    for name, why in report.refused:
        context.log.error(f"{name} refused: {why}")
    for name, size in report.too_big[:LISTED]:
        context.log.warning(f"{name} ({size} bytes) is larger than the drive can take")
    if report.refused:
        raise dg.Failure(
            description=f"{len(report.refused)} books refused: {report.summary()}",
            metadata=_metadata(report),
        )
    context.add_output_metadata(_metadata(report))


@dg.job(
    name=FILL_JOB,
    description="Copy onto a sneaker drive the books it should carry, until it is full.",
    tags={KIND_TAG: FILL_KIND},
    executor_def=dg.in_process_executor,
)
def fill_sneaker_drive() -> None:
    fill_drive_op()


class DriveIngestConfig(dg.Config):
    drive_uuid: str = Field(description="The drive whose waiting books to copy and store.")
    drive: str = Field(description="Where it is mounted on this machine.")


class _DriveTally:
    """Totals of a drive's ingest as books finish, a line every ~15 s as books finish and
    every 5 minutes while one large book is copied: the run's log is its heartbeat
    (``stuck_runs_sensor`` takes a drive ingest whose log is silent for hours as hung)."""

    def __init__(self, context: dg.OpExecutionContext, catalogue: CatalogueResource) -> None:
        self.context, self.catalogue = context, catalogue
        self.stored: list[str] = []
        self.refused: list[dict[str, str]] = []
        self.bytes = self.copied = 0
        self.started = self.last = time.monotonic()

    def moved(self, n: int) -> None:
        self.copied += n
        if time.monotonic() - self.last > BYTES_PROGRESS_EVERY:
            self.last = time.monotonic()
            self.context.log.info(f"{self.copied} bytes copied off the drive so far")

    def done(self, outcome: IngestOutcome) -> None:
        if outcome.status == "stored":
            self.context.log_event(book_materialization(outcome))
            self.stored.append(outcome.name)
            self.bytes += outcome.size
        elif outcome.status == "failed":
            self.context.log.error(f"refused {outcome.name}: {outcome.reason}")
            self.refused.append({"name": outcome.name, "reason": outcome.reason or ""})
            drop_book_partition(self.context, self.catalogue, outcome.name)
        if time.monotonic() - self.last > 15:
            self.last = time.monotonic()
            self.context.log.info(f"{len(self.stored)} books stored so far")

    def metadata(self, drive_uuid: str) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        return {
            "drive": drive_uuid,
            "books": dg.MetadataValue.int(len(self.stored)),
            "bytes": dg.MetadataValue.int(self.bytes),
            "size (human)": human_size(self.bytes),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "MB/s": dg.MetadataValue.float(round(self.bytes / 1e6 / seconds, 1) if seconds else 0),
            "refused": dg.MetadataValue.json(self.refused[:LISTED]),
        }


def _tell_origin_now(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, peers: PeersResource
) -> None:
    """The origin hears at once what arrived; what it does not take, the outbox sensor
    delivers later. Nothing here fails the run: the books are stored either way."""
    try:
        report = deliver(catalogue.catalogue, catalogue.settings, peers.links())
    except ServiceError as error:
        context.log.warning(f"callbacks not delivered now (retried later): {error.detail}")
        return
    for problem in report.errors:
        context.log.warning(f"callback not delivered (retried later): {problem}")


@dg.op(name=DRIVE_INGEST_OP, tags={KIND_TAG: DRIVE_INGEST_KIND}, out=dg.Out(dg.Nothing))
def ingest_drive_op(
    context: dg.OpExecutionContext,
    config: DriveIngestConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
    peers: PeersResource,
) -> None:
    names = [name for _, name in pending_books(catalogue.catalogue, config.drive_uuid)]
    context.instance.add_dynamic_partitions(BOOKS_PARTITIONS, names)
    tally = _DriveTally(context, catalogue)
    try:
        copy_and_store(
            catalogue.catalogue,
            catalogue.settings,
            stores.all(),
            config.drive_uuid,
            config.drive,
            run_id=context.run_id,
            run_is_active=lambda run_id: run_is_active(context.instance, run_id),
            done=tally.done,
            moved=tally.moved,
        )
    except ServiceError as error:
        context.log.error(error.detail)
        metadata = tally.metadata(config.drive_uuid)
        raise dg.Failure(description=error.detail, metadata=metadata) from None
    finally:
        _tell_origin_now(context, catalogue, peers)
    with catalogue.session() as session:  # it ran to its end: earlier stalls are over
        clear_stuck(session, DRIVE_INGEST_JOB, config.drive_uuid)
    context.log.info(f"drive {config.drive_uuid}: {len(tally.stored)} books stored")
    if tally.refused:
        raise dg.Failure(
            description=f"{len(tally.refused)} books of drive {config.drive_uuid} refused",
            metadata=tally.metadata(config.drive_uuid),
        )
    context.add_output_metadata(tally.metadata(config.drive_uuid))


@dg.job(
    name=DRIVE_INGEST_JOB,
    description="Copy a drive's books into our stores, verified against its manifest.",
    tags={KIND_TAG: DRIVE_INGEST_KIND},
    executor_def=dg.in_process_executor,
)
def ingest_sneaker_drive() -> None:
    ingest_drive_op()


JOBS = [fill_sneaker_drive, ingest_sneaker_drive]
