"""``stuck_runs_sensor``: a fill or a drive ingest that stopped moving is cancelled, with an alert.

A drive that hangs (a USB bridge that stops answering, a mount gone stale) leaves its run
"started" forever, and the sensors that ask for fills and drive ingests wait for it to end:
nothing would move again, and the UI would show a run in progress. Every 5 minutes this
sensor looks at the started runs of ``fill_sneaker_drive`` and ``ingest_sneaker_drive``
(at most ``PER_TICK`` of each): one whose newest Dagster event (their logs say how far
they got as books finish, and every 5 minutes while one large book is copied) is older
than ``[transfer] stuck_after_hours`` gets a ``run_stuck`` alert naming the run, when it
started and when it last moved, and is then cancelled (the launcher ends its process; run
monitoring marks it cancelled if it cannot). The alerts of one cause (job and store or
drive) are one grouped event whose count is the tries used: the sensors that ask for those
runs ask again while tries are left and stop at ``[transfer] max_attempts``
(``services.integrity_stuck``).

Clone batches have their own detection, by bytes moved (``services.clones_settle``);
uploads expire when no byte arrives (``services.upload_reservations``).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from librarian_dagster.jobs.names import DRIVE_INGEST_JOB, DRIVE_TAG, FILL_JOB, STORE_TAG
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.services.integrity_stuck import (
    STUCK_KIND,
    out_of_tries,
    stuck_subject,
    stuck_tries,
)
from librarian_dagster.states import Severity

# The job watched, and the tag naming what its run works on.
WATCHED = {FILL_JOB: STORE_TAG, DRIVE_INGEST_JOB: DRIVE_TAG}
PER_TICK = 100


def last_progress(instance: dg.DagsterInstance, record: dg.RunRecord) -> datetime:
    """When the run last showed progress: its newest event, else when it started."""
    newest = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    stamps = [r.event_log_entry.timestamp for r in newest.records]
    stamps += [s for s in (record.start_time, record.create_timestamp.timestamp()) if s]
    return datetime.fromtimestamp(max(stamps), UTC)


def cancel(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Ask for the run to end, as the UI's Terminate does; what became of the request.

    The launcher marks the run canceling and tells its process; where it cannot (no
    launcher support, the code server gone), the run is marked canceling here, so that run
    monitoring marks it canceled after its timeout and the run is not counted again.
    """
    try:
        ended = instance.run_launcher.terminate(run.run_id)
        outcome = "its process was told to end" if ended else "its process could not be told"
    except NotImplementedError:
        outcome = "its launcher cannot end it"
    except Exception as error:  # the code server refused or is gone: the run still ends
        outcome = f"telling its process failed ({type(error).__name__})"
    latest = instance.get_run_by_id(run.run_id)
    if latest is not None and latest.status == dg.DagsterRunStatus.STARTED:
        instance.report_run_canceling(latest, message="no progress: cancelled as stuck")
        outcome += "; run monitoring will mark it cancelled"
    return outcome


def _stalled(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    notifier: NotifierResource,
    job_name: str,
    record: dg.RunRecord,
    moved: datetime,
) -> None:
    """Count and tell the stall first (a failed cancel must not lose it), then cancel."""
    settings = catalogue.settings.transfer
    run = record.dagster_run
    target = run.tags.get(WATCHED[job_name], "unknown")
    started = datetime.fromtimestamp(record.start_time or moved.timestamp(), UTC)
    with catalogue.session() as session:
        tries = stuck_tries(session, job_name, target) + 1
    gave_up = out_of_tries(tries, settings.max_attempts)
    then = f"; {gave_up}" if gave_up else "; it will be asked for again"
    text = (
        f"run {run.run_id} started {started:%Y-%m-%d %H:%M} UTC and made no progress since "
        f"{moved:%Y-%m-%d %H:%M} UTC (over {settings.stuck_after_hours:g} h): cancelled. "
        f"Stall {tries} of {settings.max_attempts}{then}."
    )
    notifier.alert(
        f"Run of {job_name} for {target} stuck",
        text,
        severity=Severity.ERROR if gave_up else Severity.WARNING,
        kind=STUCK_KIND,
        subject=stuck_subject(job_name, target),
        details={"run_id": run.run_id, "started": started.isoformat()},
    )
    outcome = cancel(context.instance, run)
    context.log.warning(f"cancelled stuck run {run.run_id} of {job_name} ({target}): {outcome}")


@dg.sensor(
    name="stuck_runs_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Cancels a drive fill or drive ingest with no progress for hours, with an alert.",
)
def stuck_runs_sensor(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    notifier: NotifierResource,
) -> dg.SkipReason:
    limit = timedelta(hours=catalogue.settings.transfer.stuck_after_hours)
    now = datetime.now(UTC)
    cancelled: list[str] = []
    problems: list[str] = []
    for job_name in WATCHED:
        records = context.instance.get_run_records(
            dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED]),
            limit=PER_TICK,
        )
        for record in records:
            moved = last_progress(context.instance, record)
            if now - moved < limit:
                continue
            run_id = record.dagster_run.run_id
            try:
                _stalled(context, catalogue, notifier, job_name, record, moved)
            except Exception as error:  # one run's trouble must not hide the others'
                problems.append(f"{run_id}: {type(error).__name__}: {error}")
                continue
            cancelled.append(f"{job_name} {run_id}")
    if problems:  # the sensor's tick goes red with them; the next tick tries again
        raise RuntimeError(f"stuck runs not handled: {'; '.join(problems)}")
    return dg.SkipReason(
        f"cancelled {len(cancelled)} stuck runs: {', '.join(cancelled)}"
        if cancelled
        else "no fill or drive ingest is stuck"
    )


SENSORS = [stuck_runs_sensor]
