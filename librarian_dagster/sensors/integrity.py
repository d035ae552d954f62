"""``verify_integrity_schedule``: an integrity pass every hour (at minute 23).

Hourly, so that each pass is short (``[integrity] max_seconds_per_run``, 55 min by default)
and the copies due are spread over the day; it asks for nothing while a pass is still
queued or running (a slow disk means fewer passes, never a pile of them).
"""

import dagster as dg

from librarian_dagster.jobs.integrity import verify_integrity
from librarian_dagster.jobs.names import VERIFY_JOB, VERIFY_SCHEDULE

_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


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
    unfinished = context.instance.get_run_ids(
        dg.RunsFilter(job_name=VERIFY_JOB, statuses=_UNFINISHED), limit=1
    )
    if unfinished:
        return dg.SkipReason(f"integrity pass {unfinished[0]} has not finished")
    return dg.RunRequest()


SCHEDULES = [verify_integrity_schedule]
