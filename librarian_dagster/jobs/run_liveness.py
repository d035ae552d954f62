"""Is the run that claimed a transfer still working on it? Runs of the API process included.

A run executed inside the API process (``jobs.api_executor``) has no run worker that Dagster
can monitor, so its tags name the process that executes it (host, pid and the process's
start time, which tells a reused pid apart). A run whose process is gone is over, whatever
its status says: ``run_is_active`` treats it so, the ingest sensor then re-requests its
books, and ``fail_abandoned_runs`` (called by the sensor and when an API process starts)
marks it failed so the UI does not show it running forever. For every other run Dagster's
status is the answer.
"""

import os
import socket
from functools import cache

import dagster as dg

from librarian_dagster.jobs.names import (
    API_EXECUTOR,
    EXECUTOR_TAG,
    FINISHED_TAG,
    PARENT_RUN_TAG,
    PROCESS_TAG,
)

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return ""  # no procfs: fall back to "the pid exists"
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def token_of(pid: int) -> str:
    """``host:pid:start`` of a running process, unique across pid reuse on Linux."""
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or ''}"


@cache
def process_token() -> str:
    """This process's token (``token_of``), the value of the ``librarian/process`` tag."""
    return token_of(os.getpid())


def process_is_gone(token: str) -> bool:
    """Whether the process a token names has exited. Unknown hosts are assumed alive."""
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    current = _start_time(pid)
    return current is None or (bool(start) and bool(current) and current != start)


def executed_by_api(run: dg.DagsterRun) -> bool:
    """Whether the API process executes this run (``jobs.api_executor``).

    A re-execution of such a run (from the UI) inherits its tags, ``librarian/executor``
    included, but is launched through the queue like any other run: it has a parent.
    """
    return run.tags.get(EXECUTOR_TAG) == API_EXECUTOR and PARENT_RUN_TAG not in run.tags


def worker_is_gone(run: dg.DagsterRun) -> bool:
    """An API-executed run whose process has exited (nobody will ever finish it)."""
    token = run.tags.get(PROCESS_TAG)
    return executed_by_api(run) and token is not None and process_is_gone(token)


def run_is_active(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a run that claimed a transfer may still be working on it.

    For an API run the status is not evidence: *Terminate* in the UI, run monitoring's
    cancel timeout or a site's max runtime can mark it canceled or failed while the API's
    thread is still verifying and renaming (nothing can stop that thread). Judging it over
    then would let a second run take its books mid-rename. It is over once its runner has
    marked it finished, or once its process has exited.
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        return False
    if executed_by_api(run):
        return FINISHED_TAG not in run.tags and not worker_is_gone(run)
    return run.status in ACTIVE_RUN_STATUSES


def fail_abandoned_runs(instance: dg.DagsterInstance, limit: int = 100) -> list[str]:
    """Mark API-executed runs whose process has exited as failed; return their ids."""
    runs = instance.get_runs(
        dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={EXECUTOR_TAG: API_EXECUTOR}),
        limit=limit,
    )
    failed = []
    for run in runs:
        if worker_is_gone(run):
            instance.report_run_failed(
                run,
                "the API process executing this run exited before it finished; the ingest "
                "sensor asks for a new run for its books",
            )
            failed.append(run.run_id)
    return failed
