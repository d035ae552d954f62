"""``verify_integrity_schedule``: an integrity pass every hour (at minute 23);
``rolling_cleanup_schedule``: rolling stores cleaned every hour (at minute 47), and
``clean_staging_schedule`` (at minute 5), a run only when none is unfinished;
``repair_sensor``: a ``repair_copies`` run when a corrupt copy is due for a repair request.

Hourly, so that each pass is short (``[integrity] max_seconds_per_run``, 55 min by default)
and the copies due are spread over the day; it asks for nothing while a pass is still
queued or running (a slow disk means fewer passes, never a pile of them).
"""

from datetime import UTC, datetime

import dagster as dg

from librarian_dagster.jobs.integrity import repair_copies, rolling_cleanup, verify_integrity
from librarian_dagster.jobs.integrity_scan import clean_staging_job
from librarian_dagster.jobs.names import (
    REPAIR_JOB,
    ROLLING_JOB,
    ROLLING_SCHEDULE,
    STAGING_JOB,
    STAGING_SCHEDULE,
    VERIFY_JOB,
    VERIFY_SCHEDULE,
)
from librarian_dagster.jobs.run_liveness import ACTIVE_RUN_STATUSES
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.integrity_repair import repairs_due


def unless_unfinished(instance: dg.DagsterInstance, job: str) -> dg.RunRequest | dg.SkipReason:
    """A run of ``job``, unless one is still queued or running (one at a time, never a pile)."""
    unfinished = instance.get_run_ids(
        dg.RunsFilter(job_name=job, statuses=ACTIVE_RUN_STATUSES), limit=1
    )
    if unfinished:
        return dg.SkipReason(f"{job} run {unfinished[0]} has not finished")
    return dg.RunRequest()


@dg.schedule(
    name=VERIFY_SCHEDULE,
    job=verify_integrity,
    cron_schedule="23 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-verify the stored copies that are due, hourly, within a budget.",
)
def verify_integrity_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    return unless_unfinished(context.instance, VERIFY_JOB)


@dg.sensor(
    name="repair_sensor",
    job=repair_copies,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Asks for a repair_copies run while a corrupt copy waits for a peer's copy.",
)
def repair_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.RunRequest | dg.SkipReason:
    with catalogue.session() as session:
        due = repairs_due(session, datetime.now(UTC), limit=1)
    if not due:
        return dg.SkipReason("no corrupt copy is due for a repair request")
    # Not while a pass runs: its burst guard is decided when it ends, and a store going
    # bad must not have its first bad copies re-fetched before then.
    passing = unless_unfinished(context.instance, VERIFY_JOB)
    if isinstance(passing, dg.SkipReason):
        return dg.SkipReason(f"waiting for the integrity pass: {passing.skip_message}")
    return unless_unfinished(context.instance, REPAIR_JOB)


@dg.schedule(
    name=ROLLING_SCHEDULE,
    job=rolling_cleanup,
    cron_schedule="47 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rolling stores delete books past their limit that peers verified just now.",
)
def rolling_cleanup_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    return unless_unfinished(context.instance, ROLLING_JOB)


@dg.schedule(
    name=STAGING_SCHEDULE,
    job=clean_staging_job,
    cron_schedule="5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Leftover staging of failed and cancelled transfers removed; the rest reported.",
)
def clean_staging_schedule(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    return unless_unfinished(context.instance, STAGING_JOB)


SCHEDULES = [verify_integrity_schedule, rolling_cleanup_schedule, clean_staging_schedule]
SENSORS = [repair_sensor]
