"""``ingest_books``: verify staged books and move them into their stores.

One run handles many books (a run costs a process; a burst of uploads should not cost a
process each). Each book is claimed, verified with one streaming read, renamed into the store
and recorded by ``services.ingest``; the run then reports a ``book`` materialization for each
stored book. A book that fails verification loses its partition (it is not stored); a book
another run already handled is skipped. An unexpected error (a disk failing, say) on one book
does not stop the others; the run fails at the end so the failure alerts, and the sensor asks
for a new run once this one is over.
"""

import dagster as dg
from pydantic import Field
from sqlalchemy import select

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.catalogue.models import File
from librarian_dagster.jobs.api_runs import run_is_active
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.services.ingest import IngestOutcome, ingest_transfer
from librarian_dagster.services.ingest_requests import (
    BOOKS_PARTITIONS,
    INGEST_JOB,
    INGEST_OP,
    KIND_TAG,
)


class IngestConfig(dg.Config):
    transfer_ids: list[int] = Field(description="Incoming transfers (staged) to verify and store.")


def _materialization(outcome: IngestOutcome) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=BOOK_KEY,
        partition=outcome.name,
        metadata={
            "size": dg.MetadataValue.int(outcome.size),
            "checksum": outcome.checksum or "",
            "store": outcome.store or "",
            "path": dg.MetadataValue.path(outcome.path or ""),
            "seconds": dg.MetadataValue.float(round(outcome.seconds, 3)),
            "MB/s": dg.MetadataValue.float(round(outcome.mb_per_second, 1)),
        },
    )


def _drop_partition(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, name: str
) -> None:
    """Remove the partition of a book that is not stored (unless another copy made it)."""
    with catalogue.session() as session:
        if session.scalar(select(File.id).where(File.name == name)) is not None:
            return
    context.instance.delete_dynamic_partition(BOOKS_PARTITIONS, name)


@dg.op(name=INGEST_OP, tags={KIND_TAG: "ingest"})
def ingest_books_op(
    context: dg.OpExecutionContext,
    config: IngestConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
) -> None:
    all_stores = stores.all()
    errors: list[str] = []
    for transfer_id in config.transfer_ids:
        try:
            outcome = ingest_transfer(
                catalogue.catalogue,
                all_stores,
                transfer_id,
                run_id=context.run_id,
                run_is_active=lambda run_id: run_is_active(context.instance, run_id),
                settings=catalogue.settings,
            )
        except Exception as error:  # leave it claimed-but-unfinished; a later run repairs it
            context.log.exception(f"transfer {transfer_id}: unexpected error")
            errors.append(f"{transfer_id}: {type(error).__name__}: {error}")
            continue
        if outcome.status == "stored":
            context.log.info(
                f"stored {outcome.name} ({outcome.size} bytes, {outcome.mb_per_second:.0f} MB/s)"
            )
            context.log_event(_materialization(outcome))
        elif outcome.status == "failed":
            context.log.warning(f"{outcome.name}: {outcome.reason}")
            _drop_partition(context, catalogue, outcome.name)
        else:
            context.log.info(f"{outcome.name}: skipped ({outcome.reason})")
    if errors:
        raise dg.Failure(
            description=f"{len(errors)} of {len(config.transfer_ids)} books hit unexpected errors",
            metadata={"errors": dg.MetadataValue.json(errors)},
        )


@dg.job(
    name=INGEST_JOB,
    description="Verify staged books and move them into their stores (one run, many books).",
    tags={KIND_TAG: "ingest"},
    executor_def=dg.in_process_executor,
)
def ingest_books() -> None:
    ingest_books_op()
