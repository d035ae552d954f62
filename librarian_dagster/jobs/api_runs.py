"""``ingest_books`` runs executed inside the API process, and what happens when it dies.

A run launched through the run queue waits for the daemon's next dequeue (up to 1 s) and
then for a new worker process to import Dagster and the code location (1.2-1.5 s on this
kind of machine): about 2 s before the first book is touched, 90 % of a small upload's
latency. The API process has both imported already, so it executes the runs it asks for at
commit itself, with ``execute_in_process`` against the real instance: the same job, op,
events and materializations, a run in the UI like any other (tagged
``librarian/executor=api``), about 0.4 s of Dagster bookkeeping instead of 2 s.

Such a run has no run worker that Dagster can monitor, so its tags name the process that
executes it (host, pid and the process's start time, which tells a reused pid apart). A run
whose process is gone is over, whatever its status says: ``run_is_active`` treats it so,
the ingest sensor then re-requests its books, and ``fail_abandoned_runs`` (called by the
sensor and when an API process starts) marks it failed so the UI does not show it running
forever.
"""

import os
import socket
from functools import cache

import dagster as dg
from dagster._core.utils import make_new_run_id

EXECUTOR_TAG = "librarian/executor"
PROCESS_TAG = "librarian/process"
# Set by the API's runner once execute_in_process has returned (or raised).
FINISHED_TAG = "librarian/finished"
API_EXECUTOR = "api"

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

# Op logs of API runs go to the event log (the UI); the API's own log gets warnings only.
_QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Capturing a run's stdout/stderr means dup2-ing the process's fds 1 and 2 to a `tail`
# process: in the API that would divert every thread's output while a run goes on. Its ops
# log through Dagster's event log instead, which the UI shows.
_NO_CAPTURE = {
    "compute_logs": {
        "module": "dagster._core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
}


def api_instance() -> dg.DagsterInstance:
    """``DAGSTER_HOME``'s instance as the API process uses it: without compute-log capture."""
    from dagster._core.instance.ref import InstanceRef

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError("DAGSTER_HOME is not set")
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=_NO_CAPTURE))


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


def worker_is_gone(run: dg.DagsterRun) -> bool:
    """An API-executed run whose process has exited (nobody will ever finish it)."""
    token = run.tags.get(PROCESS_TAG)
    return (
        run.tags.get(EXECUTOR_TAG) == API_EXECUTOR
        and token is not None
        and (process_is_gone(token))
    )


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
    if run.tags.get(EXECUTOR_TAG) == API_EXECUTOR:
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


@cache
def ingest_job() -> dg.JobDefinition:
    """The code location's ``ingest_books`` with its resources, resolved once per process."""
    from librarian_dagster.definitions import defs

    return defs.resolve_job_def("ingest_books")


def execute_ingest_run(
    instance: dg.DagsterInstance,
    run_config: dict[str, object],
    tags: dict[str, str],
    resources: dict[str, object] | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute one ``ingest_books`` run in this process (the caller's thread).

    Whatever happens, the run is then tagged finished (see ``run_is_active``); if Dagster
    itself raised, the run is also marked failed rather than left "started".
    """
    run_id = make_new_run_id()
    try:
        return ingest_job().execute_in_process(
            run_config={**run_config, **_QUIET_LOGGERS},
            instance=instance,
            tags={**tags, EXECUTOR_TAG: API_EXECUTOR, PROCESS_TAG: process_token()},
            resources=resources,
            raise_on_error=False,
            run_id=run_id,
        )
    except BaseException:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in ACTIVE_RUN_STATUSES:
            instance.report_run_failed(run, "the API's runner hit an error; see the API log")
        raise
    finally:
        if instance.get_run_by_id(run_id) is not None:
            instance.add_run_tags(run_id, {FINISHED_TAG: "true"})
