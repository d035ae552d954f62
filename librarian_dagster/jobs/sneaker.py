"""The SneakerNet jobs: fill a drive.

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
"""

from typing import Any

import dagster as dg
from pydantic import Field

from librarian_dagster.jobs.names import FILL_JOB, FILL_KIND, FILL_OP, KIND_TAG
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.services import sneaker
from librarian_dagster.states import Severity
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.units import human_size

# Book names the metadata lists (counts are whole).
LISTED = 100


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
):  # type: ignore[no-untyped-def]
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
    except (sneaker.FillRefused, StoreError) as refused:
        context.log.error(str(refused))
        raise dg.Failure(description=str(refused)) from None
    context.log.info(report.summary())
    for name, why in report.refused:
        context.log.error(f"{name} refused: {why}")
    if report.refused:
        raise dg.Failure(
            description=f"{len(report.refused)} books refused: {report.summary()}",
            metadata=_metadata(report),
        )
    yield dg.Output(None, metadata=_metadata(report))


@dg.job(
    name=FILL_JOB,
    description="Copy onto a sneaker drive the books it should carry, until it is full.",
    tags={KIND_TAG: FILL_KIND},
    executor_def=dg.in_process_executor,
)
def fill_sneaker_drive() -> None:
    fill_drive_op()


JOBS = [fill_sneaker_drive]
