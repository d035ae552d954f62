"""``ingest_books``: verify staged books and move them into their stores.

One run handles many books (a run costs a process; a burst of uploads should not cost a
process each). Inbox books the sensor found are registered first (``services.inbox``: each
renamed into staging as a transfer of its own), then every transfer is claimed, verified
with one streaming read, renamed into the store and recorded by ``services.ingest``; the run
reports a ``book`` materialization for each stored book. A book that fails verification
loses its partition (it is not stored); a book another run already handled is skipped. An
unexpected error (a disk failing, say) on one book does not stop the others; the run fails
at the end so the failure alerts, and the sensor asks for a new run once this one is over.
"""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.jobs.names import (
    BOOKS_PARTITIONS,
    BOOKS_TAG,
    COMMIT_REQUEST,
    EXECUTOR_TAG,
    INGEST_JOB,
    INGEST_KIND,
    INGEST_OP,
    KIND_TAG,
    PARENT_RUN_TAG,
    QUEUE_EXECUTOR,
    REQUESTED_BY_TAG,
    UI_USER_TAG,
)
from librarian_dagster.jobs.run_liveness import run_is_active
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.services import inbox
from librarian_dagster.services.files import is_catalogued
from librarian_dagster.services.ingest import IngestOutcome, ingest_transfer
from librarian_dagster.services.ingest_requests import StagedItem, clear_launched, group_for_runs
from librarian_dagster.states import TransferStatus
from librarian_dagster.units import human_size


class InboxBookConfig(dg.Config):
    store: str = Field(description="The store whose inbox holds the book.")
    name: str = Field(description="The book's path below the inbox (its catalogue name).")


class IngestConfig(dg.Config):
    transfer_ids: list[int] = Field(description="Incoming transfers (staged) to verify and store.")
    register_inbox: bool = Field(
        default=False,
        description="First finish interrupted inbox registrations and register inbox_books.",
    )
    inbox_books: list[InboxBookConfig] = Field(
        default=[], description="Inbox books to register (rename into staging) and then store."
    )


def ingest_run_config(
    transfer_ids: Sequence[int], inbox_books: Sequence[inbox.InboxBook] | None = None
) -> dict[str, object]:
    """The run config of an ``ingest_books`` run for these transfers.

    With ``inbox_books`` (even none) it is an inbox run: it also finishes interrupted inbox
    registrations and registers those books. Other runs do not look at inboxes at all.
    """
    config: dict[str, object] = {"transfer_ids": list(transfer_ids)}
    if inbox_books is not None:
        config["register_inbox"] = True
        config["inbox_books"] = [{"store": b.store, "name": b.name} for b in inbox_books]
    return {"ops": {INGEST_OP: {"config": config}}}


def describe_books(names: Sequence[str]) -> str:
    """Which books a run is about, for the runs list: the first, or first … last (n books)."""
    if len(names) <= 1:
        return names[0] if names else ""
    return f"{names[0]} … {names[-1]} ({len(names)} books)"


def ingest_run_tags(group: Sequence[StagedItem]) -> dict[str, str]:
    """Tags of an ingest run: its kind (the queue limits it), which books, and who asked.

    A run asked for at commit names the accounts that committed (the UI's "Launched by"
    shows it instead of "Manually launched"); a sensor's run is named by Dagster itself.
    """
    tags = {KIND_TAG: INGEST_KIND, BOOKS_TAG: describe_books([item.name for item in group])[:200]}
    committers = sorted({item.committed_by for item in group if item.committed_by})
    if committers:
        who = ", ".join(committers[:3]) + (
            f" and {len(committers) - 3} more" if len(committers) > 3 else ""
        )
        tags[UI_USER_TAG] = f"{who} (commit)"[:200]
        tags[REQUESTED_BY_TAG] = COMMIT_REQUEST
    return tags


def book_materialization(outcome: IngestOutcome) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=BOOK_KEY,
        partition=outcome.name,
        metadata={
            "size": dg.MetadataValue.int(outcome.size),
            "size (human)": human_size(outcome.size),
            "checksum": outcome.checksum or "",
            "store": outcome.store or "",
            "path": dg.MetadataValue.path(outcome.path or ""),
            "seconds": dg.MetadataValue.float(round(outcome.seconds, 3)),
            "MB/s": dg.MetadataValue.float(round(outcome.mb_per_second, 1)),
        },
    )


def _register_inbox_books(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, config: IngestConfig
) -> list[int]:
    """Rename the listed inbox books into staging; the transfer ids this run ingests.

    Every book is registered (a rename each), but this run ingests only the first group,
    capped in books and bytes like any ingest run; the others are handed to the sensor at
    once (``launched_at`` cleared), which asks for capped runs for them, as for uploads.
    """
    books = [inbox.InboxBook(book.store, book.name) for book in config.inbox_books]
    registered = inbox.register_books(catalogue.catalogue, catalogue.settings, books)
    for line in registered.lines:
        context.log.info(line)
    if not registered.staged:
        return []
    names = sorted({item.name for item in registered.staged})
    context.instance.add_dynamic_partitions(BOOKS_PARTITIONS, names)
    limits = catalogue.settings.ingest
    first, *rest = group_for_runs(
        registered.staged, limits.max_books_per_run, limits.max_bytes_per_run
    )
    later = [item.transfer_id for group in rest for item in group]
    if later:
        clear_launched(catalogue.catalogue, later)
        context.log.info(f"{len(later)} more inbox books are left to the sensor's next runs")
    return [item.transfer_id for item in first]


def drop_book_partition(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, name: str
) -> None:
    """Remove the partition of a book that is not stored (unless another copy made it)."""
    with catalogue.session() as session:
        if is_catalogued(session, name):
            return
    context.instance.delete_dynamic_partition(BOOKS_PARTITIONS, name)


def _retag_re_execution(context: dg.OpExecutionContext, parent: str) -> None:
    """A re-execution inherits its parent's tags: say truthfully who runs it and where.

    It was launched from the UI (not at commit) and executes in a run worker (not in the
    API process); ``run_liveness`` already judges it by status (it has a parent).
    """
    context.instance.add_run_tags(
        context.run_id,
        {
            UI_USER_TAG: f"re-execution of {parent[:8]}",
            REQUESTED_BY_TAG: "re-execution",
            EXECUTOR_TAG: QUEUE_EXECUTOR,
        },
    )


def ingest_transfers(
    context: dg.OpExecutionContext,
    catalogue: CatalogueResource,
    stores: StoresResource,
    transfer_ids: Sequence[int],
    *,
    re_execution: bool = False,
) -> None:
    """Verify and store each transfer (``services.ingest``), one ``book`` materialization per
    stored book; the one loop of every ingesting op (uploads, inbox books, clones).

    A run that refused a book fails (red in the UI), after the books it stored were recorded;
    its metadata says which were refused and why. An unexpected error on one book does not
    stop the others; the run fails at the end so the failure alerts.
    """
    all_stores = stores.all()
    errors: list[str] = []
    refused: list[dict[str, str]] = []
    stored = 0
    for transfer_id in transfer_ids:
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
        if outcome.status == "stored":  # its materialization says what, where and how fast
            context.log_event(book_materialization(outcome))
            stored += 1
        elif outcome.status == "failed":
            context.log.error(f"refused {outcome.name}: {outcome.reason}")
            refused.append({"name": outcome.name, "reason": outcome.reason or ""})
            drop_book_partition(context, catalogue, outcome.name)
        elif re_execution and outcome.reason == f"already {TransferStatus.FAILED.value}":
            # Re-executing cannot retry a refused book (its data is gone): not "all is well".
            context.log.error(f"{outcome.name}: refused by an earlier run; upload it again")
            refused.append({"name": outcome.name, "reason": "refused by an earlier run"})
        else:
            context.log.info(f"{outcome.name}: skipped ({outcome.reason})")
    context.log.info(f"stored {stored} of {len(transfer_ids)} books")
    if errors or refused:
        parts = [f"{len(refused)} refused"] if refused else []
        parts += [f"{len(errors)} hit unexpected errors"] if errors else []
        raise dg.Failure(
            description=f"of {len(transfer_ids)} books, {' and '.join(parts)}",
            metadata={
                "refused": dg.MetadataValue.json(refused),
                "errors": dg.MetadataValue.json(errors),
            },
        )


@dg.op(name=INGEST_OP, tags={KIND_TAG: INGEST_KIND})
def ingest_books_op(
    context: dg.OpExecutionContext,
    config: IngestConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
) -> None:
    parent = context.run.tags.get(PARENT_RUN_TAG)
    if parent is not None:
        _retag_re_execution(context, parent)
    transfer_ids = list(config.transfer_ids)
    if config.register_inbox:
        transfer_ids += _register_inbox_books(context, catalogue, config)
    ingest_transfers(context, catalogue, stores, transfer_ids, re_execution=parent is not None)


@dg.job(
    name=INGEST_JOB,
    description="Verify staged books and move them into their stores (one run, many books).",
    tags={KIND_TAG: INGEST_KIND},
    executor_def=dg.in_process_executor,
)
def ingest_books() -> None:
    ingest_books_op()


JOBS = [ingest_books]
