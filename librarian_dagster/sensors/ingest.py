"""``ingest_sensor``: staged books and finished inbox books → ``ingest_books`` runs.

Cheap and bounded per tick. Staged transfers: two indexed queries over pending transfers
only (``staged`` with no run requested or an overdue one; ``verifying`` whose run is over),
capped by ``ingest.max_transfers_per_tick``; the books are grouped into runs capped in books
and bytes, their partitions added (one batched call) and the run requests returned. The API
usually launched a run at commit already, and then the sensor leaves those books alone until
the request is overdue. The cursor is the highest transfer id requested so far (a
high-water mark, shown in the UI).

Inbox books: the sensor only lists entries and markers (``services.inbox.find_books``), at
most ``max_transfers_per_tick``, and leaves out names a transfer is handling already; the
run renames them into staging and ingests them. One inbox run at a time: none is requested
while another is queued or running (unless that one is older than
``relaunch_after_seconds``: its worker may have died without Dagster knowing), nor for the
same books within ``relaunch_after_seconds`` (or the quiet period, if shorter) of the last
request, so a book that is not finished after all is looked at again later, not every
second.
"""

import hashlib
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

import dagster as dg

from librarian_dagster.jobs.ingest import (
    describe_books,
    ingest_books,
    ingest_run_config,
    ingest_run_tags,
)
from librarian_dagster.jobs.names import (
    BOOKS_PARTITIONS,
    BOOKS_TAG,
    INBOX_SOURCE,
    INBOX_TAG,
    INGEST_KIND,
    KIND_TAG,
    SOURCE_TAG,
)
from librarian_dagster.jobs.run_liveness import (
    ACTIVE_RUN_STATUSES,
    fail_abandoned_runs,
    run_is_active,
)
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services import inbox
from librarian_dagster.services.ingest_requests import (
    INGEST_KINDS,
    StagedItem,
    group_for_runs,
    mark_launched,
    staged_needing_runs,
    verifying_transfers,
)
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferKind


def _orphaned(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    limit: int,
    kinds: Collection[TransferKind],
) -> list[StagedItem]:
    """Claimed transfers whose run is over without finishing them (killed, crashed)."""
    return [
        item
        for item, run_id in verifying_transfers(catalogue.catalogue, limit, kinds)
        if run_id is None or not run_is_active(context.instance, run_id)
    ]


RequestFor = Callable[[list[StagedItem], int], dg.RunRequest]


def staged_run_requests(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    kinds: Collection[TransferKind],
    request_for: RequestFor,
    max_books: int | None = None,
) -> tuple[list[dg.RunRequest], int | None]:
    """Runs for staged transfers of ``kinds`` that need one (see the module docstring), and
    the highest transfer id requested; their partitions added and the requests recorded.
    Runs hold at most ``max_books`` books (default ``[ingest] max_books_per_run``)."""
    settings = catalogue.settings.ingest
    items = staged_needing_runs(
        catalogue.catalogue,
        relaunch_after_seconds=settings.relaunch_after_seconds,
        limit=settings.max_transfers_per_tick,
        kinds=kinds,
    )
    items += _orphaned(context, catalogue, settings.max_transfers_per_tick, kinds)
    if not items:
        return [], None
    # A run the API process was executing when it died still looks started to Dagster (and
    # holds a slot of the run queue): mark it failed, so the UI tells the truth.
    for run_id in fail_abandoned_runs(context.instance):
        context.log.warning(f"run {run_id}: its API process exited; marked failed")
    items.sort(key=lambda item: item.transfer_id)
    groups = group_for_runs(
        items, max_books or settings.max_books_per_run, settings.max_bytes_per_run
    )
    now = int(time.time())
    requests = [request_for(group, now) for group in groups]
    # One batched add, not a dynamic_partitions_request: the daemon handles those one key at
    # a time with two new connections each (1.9 s on SQLite and 5.6 s on PostgreSQL for 500
    # keys, measured), while this call costs 11-50 ms. Before mark_launched: if it fails,
    # the next tick simply tries again.
    context.instance.add_dynamic_partitions(BOOKS_PARTITIONS, sorted({item.name for item in items}))
    mark_launched(catalogue.catalogue, [item.transfer_id for item in items])
    return requests, max(item.transfer_id for item in items)


def _ingest_request(group: list[StagedItem], now: int) -> dg.RunRequest:
    return dg.RunRequest(
        # Re-requests of the same books happen minutes apart: the second in the key keeps
        # them distinct while a retried evaluation of this tick is deduplicated.
        run_key=f"ingest:{group[0].transfer_id}-{group[-1].transfer_id}:{now}",
        run_config=ingest_run_config([item.transfer_id for item in group]),
        tags=ingest_run_tags(group),
    )


def _retry_seconds(settings: LibrarianSettings, books: list[inbox.InboxBook]) -> float:
    """How long one request for these inbox books stands before it is made again."""
    stores = {book.store for book in books}
    quiet = [
        config.inbox_quiet_seconds
        for config in settings.stores
        if config.name in stores and config.inbox_quiet_seconds is not None
    ]
    return min([settings.ingest.relaunch_after_seconds, *quiet])


def _inbox_request(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.RunRequest | None:
    """One run registering the finished inbox books (and interrupted registrations), or None."""
    settings = catalogue.settings
    if not any(config.inbox is not None for config in settings.stores):
        return None  # no inbox, nothing to look for (and no query on every tick)
    found = inbox.find_books(settings, limit=settings.ingest.max_transfers_per_tick)
    books = inbox.not_pending(catalogue.catalogue, found)
    if not books and not inbox.has_interrupted(catalogue.catalogue):
        return None
    now = datetime.now(UTC)
    # A run worker killed with -9 stays "started" for Dagster (the default run launcher has no
    # health check): only a run younger than relaunch_after_seconds holds the next one back.
    # Two inbox runs overlapping is safe (a registration step acts only once), just wasted.
    overdue = now - timedelta(seconds=settings.ingest.relaunch_after_seconds)
    in_flight = dg.RunsFilter(
        tags={SOURCE_TAG: INBOX_SOURCE}, statuses=ACTIVE_RUN_STATUSES, created_after=overdue
    )
    if context.instance.get_runs(in_flight, limit=1):
        return None  # it registers what it was asked to; what came since waits for it
    digest = hashlib.sha256(
        "\n".join(f"{book.store}/{book.name}" for book in books).encode()
    ).hexdigest()[:16]
    since = now - timedelta(seconds=_retry_seconds(settings, books))
    if context.instance.get_runs(
        dg.RunsFilter(tags={INBOX_TAG: digest}, created_after=since), limit=1
    ):
        return None
    described = describe_books([book.name for book in books]) or "interrupted registrations"
    return dg.RunRequest(
        run_key=f"inbox:{digest}:{int(time.time())}",
        run_config=ingest_run_config([], books),
        tags={
            KIND_TAG: INGEST_KIND,
            SOURCE_TAG: INBOX_SOURCE,
            INBOX_TAG: digest,
            BOOKS_TAG: f"inbox: {described}"[:200],
        },
    )


@dg.sensor(
    name="ingest_sensor",
    job=ingest_books,
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests ingest_books runs for staged uploads and finished inbox books.",
)
def ingest_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    requests: list[dg.RunRequest] = []
    inbox_request = _inbox_request(context, catalogue)
    if inbox_request is not None:
        context.log.info(f"inbox books to register: {inbox_request.tags[BOOKS_TAG]}")
        requests.append(inbox_request)
    staged, high_water = staged_run_requests(context, catalogue, INGEST_KINDS, _ingest_request)
    requests += staged
    if not requests:
        return dg.SensorResult(skip_reason="no staged books")
    if high_water is None:
        return dg.SensorResult(run_requests=requests, cursor=context.cursor)
    return dg.SensorResult(
        run_requests=requests, cursor=str(max(int(context.cursor or 0), high_water))
    )


SENSORS = [ingest_sensor]
