"""The receiver's sensor and the outbox's: clones to verify, callbacks to deliver.

``receive_clones_sensor`` (every second): clones whose bytes a peer delivered (``staged``)
or whose run died (``verifying``) → ``receive_clones`` runs of up to
``[transfer] max_books_per_receive_run`` books (a run costs a process start: a peer's batch
is worth one run, not five), their ``books`` partitions added in one call
(``sensors.ingest.staged_run_requests``).

``callbacks_sensor`` (every 5 s): when callbacks are due (one indexed query), one
``deliver_callbacks`` run at a time; a peer that is down has its callbacks backed off,
so they come due (and cost a run) less and less often.
"""

from datetime import UTC, datetime

import dagster as dg

from librarian_dagster.jobs.clones import deliver_callbacks, receive_clones
from librarian_dagster.jobs.ingest import describe_books
from librarian_dagster.jobs.names import (
    BOOKS_TAG,
    CALLBACKS_KIND,
    DELIVER_JOB,
    KIND_TAG,
    RECEIVE_KIND,
    RECEIVE_OP,
)
from librarian_dagster.jobs.run_liveness import ACTIVE_RUN_STATUSES
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.sensors.ingest import staged_run_requests
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.services.outbox import due_count
from librarian_dagster.states import TransferKind


def _receive_request(group: list[StagedItem], now: int) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"receive:{group[0].transfer_id}-{group[-1].transfer_id}:{now}",
        run_config={
            "ops": {RECEIVE_OP: {"config": {"transfer_ids": [i.transfer_id for i in group]}}}
        },
        tags={
            KIND_TAG: RECEIVE_KIND,
            BOOKS_TAG: describe_books([item.name for item in group])[:200],
        },
    )


@dg.sensor(
    name="receive_clones_sensor",
    job=receive_clones,
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests receive_clones runs for clones a peer delivered into our staging.",
)
def receive_clones_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    requests, high_water = staged_run_requests(
        context,
        catalogue,
        (TransferKind.CLONE,),
        _receive_request,
        max_books=catalogue.settings.transfer.max_books_per_receive_run,
    )
    if not requests or high_water is None:
        return dg.SensorResult(skip_reason="no clone delivered")
    return dg.SensorResult(
        run_requests=requests, cursor=str(max(int(context.cursor or 0), high_water))
    )


@dg.sensor(
    name="callbacks_sensor",
    job=deliver_callbacks,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a deliver_callbacks run while callbacks to peers are due.",
)
def callbacks_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    now = datetime.now(UTC)
    with catalogue.session() as session:
        due = due_count(session, now=now, limit=1000)
    if not due:
        return dg.SensorResult(skip_reason="no callback due")
    active = dg.RunsFilter(job_name=DELIVER_JOB, statuses=ACTIVE_RUN_STATUSES)
    if context.instance.get_runs(active, limit=1):
        return dg.SensorResult(skip_reason="a delivery run is on its way")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"deliver:{int(now.timestamp())}",
                tags={KIND_TAG: CALLBACKS_KIND, BOOKS_TAG: f"{due} callbacks due"},
            )
        ]
    )


SENSORS = [receive_clones_sensor, callbacks_sensor]
