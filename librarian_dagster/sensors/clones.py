"""The sender's sensors: form clone batches, and watch their mover tasks.

``clone_sensor`` (every 5 s): per enabled peer, ``services.clones.form_batches`` cuts the
books it lacks into batches, reading only books above the peer's high-water mark (no
anti-join over the catalogue), and the sensor asks for one ``clone_batch`` run per batch
and per batch that needs another step (staged and waiting for a mover slot, or retried
after a back-off). A run asked for is leased to that batch, so a repeated tick never asks
twice. A peer has at most ``max_batches_per_tick`` batches waiting (for it, or for a mover
slot), so a peer that is down holds no slot another peer needs; its batches' retries, with
back-off, find out when it is back. The cursor is the last batch id asked for.

``clone_transfers_sensor`` (every 5 s): asks the movers how their tasks are doing, at most
``POLLS_PER_TICK`` tasks not asked about for ``poll_interval_seconds``; a task that is over
gets a ``clone_batch`` run to settle it, a stalled one an operator event. Books sent long
ago and never confirmed get a ``reconcile_clones`` run per peer (at most once an hour).
"""

from datetime import UTC, datetime

import dagster as dg

from librarian_dagster.jobs.clones import clone_batch, reconcile_clones
from librarian_dagster.jobs.names import (
    BATCH_TAG,
    BOOKS_TAG,
    CALLBACKS_KIND,
    CLONE_JOB,
    CLONE_KIND,
    CLONE_OP,
    KIND_TAG,
    PEER_TAG,
    RECONCILE_JOB,
    RECONCILE_OP,
)
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.resources.movers import MoverResource
from librarian_dagster.services.clones import FormedBatch, form_batches
from librarian_dagster.services.clones_schedule import (
    batch_peers,
    batches_due,
    batches_to_poll,
    lease,
    mark_polled,
    mover_slots,
)
from librarian_dagster.services.clones_settle import note_stall, stale_transfers, track_progress
from librarian_dagster.states import BatchStatus
from librarian_dagster.storage.movers.protocol import MoverError, TaskStatus

# Batches re-asked for per tick, tasks polled per tick, stale books asked about per tick.
DUE_PER_TICK = 100
POLLS_PER_TICK = 20
STALE_PER_TICK = 1000


def batch_request(batch_id: int, peer: str, now: datetime, books: str = "") -> dg.RunRequest:
    return dg.RunRequest(
        job_name=CLONE_JOB,
        run_key=f"clone_batch:{batch_id}:{int(now.timestamp())}",
        run_config={"ops": {CLONE_OP: {"config": {"batch_id": batch_id}}}},
        tags={
            KIND_TAG: CLONE_KIND,
            BATCH_TAG: str(batch_id),
            PEER_TAG: peer,
            BOOKS_TAG: (books or f"batch {batch_id}")[:200],
        },
    )


def _described(batch: FormedBatch) -> str:
    if batch.books == 1:
        return f"to {batch.peer}: {batch.first}"
    return f"to {batch.peer}: {batch.first} … {batch.last} ({batch.books} books)"


@dg.sensor(
    name="clone_sensor",
    job=clone_batch,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Forms clone batches of the books each peer lacks; requests clone_batch runs.",
)
def clone_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    settings = catalogue.settings
    now = datetime.now(UTC)
    formed = form_batches(catalogue.catalogue, settings, now=now)
    requests = [batch_request(b.batch_id, b.peer, now, _described(b)) for b in formed]
    asked = {batch.batch_id for batch in formed}
    with catalogue.session() as session:
        due = batches_due(session, now=now, limit=DUE_PER_TICK)
        free = mover_slots(session, settings)
        peers = batch_peers(session, [row[0] for row in due])
    for batch_id, status, mover in due:
        if batch_id in asked:
            continue
        if status == BatchStatus.STAGED:  # it needs a mover slot: only as many as are free
            if free.get(mover, 0) <= 0:
                continue
            free[mover] -= 1
        requests.append(batch_request(batch_id, peers.get(batch_id, "?"), now))
        asked.add(batch_id)
    if not requests:
        return dg.SensorResult(skip_reason="no batch to form or to take further")
    lease(catalogue.catalogue, settings, sorted(asked), now)
    for batch in formed:
        context.log.info(f"batch {batch.batch_id}: {_described(batch)}")
    cursor = max([int(context.cursor or 0), *asked])
    return dg.SensorResult(run_requests=requests, cursor=str(cursor))


@dg.sensor(
    name="clone_transfers_sensor",
    jobs=[clone_batch, reconcile_clones],
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls clone batches' mover tasks; settles the finished, asks about the stale.",
)
def clone_transfers_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource, mover: MoverResource
) -> dg.SensorResult:
    settings = catalogue.settings
    now = datetime.now(UTC)
    with catalogue.session() as session:
        polls = batches_to_poll(session, settings, now=now, limit=POLLS_PER_TICK)
        peers = batch_peers(session, [row[0] for row in polls])
        stale = stale_transfers(session, settings, limit=STALE_PER_TICK, now=now)
    movers = mover.available()
    over: list[int] = []
    for batch_id, mover_name, task_id in polls:
        known = movers.get(mover_name)
        if known is None:
            continue
        try:
            report = known.status(task_id)
        except MoverError as error:  # the run asks again, and backs off or settles it
            context.log.warning(f"batch {batch_id}: {mover_name} task {task_id}: {error}")
            over.append(batch_id)
            continue
        stuck = track_progress(catalogue.catalogue, settings, batch_id, report.bytes_moved, now)
        if report.status.final or stuck is not None:  # the run settles or gives it up
            over.append(batch_id)
        elif report.status == TaskStatus.STALLED:
            note_stall(catalogue.catalogue, batch_id, mover_name, task_id, report.fault)
    mark_polled(catalogue.catalogue, [row[0] for row in polls], now)
    requests = [batch_request(batch_id, peers.get(batch_id, "?"), now) for batch_id in over]
    lease(catalogue.catalogue, settings, over, now)
    hour = int(now.timestamp() // 3600)
    for peer_id, transfer_ids in stale.items():
        requests.append(
            dg.RunRequest(
                job_name=RECONCILE_JOB,
                run_key=f"reconcile:{peer_id}:{hour}",
                run_config={
                    "ops": {
                        RECONCILE_OP: {"config": {"peer_id": peer_id, "transfer_ids": transfer_ids}}
                    }
                },
                tags={KIND_TAG: CALLBACKS_KIND, PEER_TAG: str(peer_id)},
            )
        )
    if not requests:
        return dg.SensorResult(skip_reason=f"{len(polls)} tasks polled, none over")
    return dg.SensorResult(run_requests=requests)


SENSORS = [clone_sensor, clone_transfers_sensor]
