"""``ingest_books`` runs executed inside the API process.

A run launched through the run queue waits for the daemon's next dequeue (up to 1 s) and
then for a new worker process to import Dagster and the code location (1.2-1.5 s on this
kind of machine): about 2 s before the first book is touched, 90 % of a small upload's
latency. The API process has Dagster imported already, so it executes the runs it asks for
at commit itself, with ``execute_in_process`` against the real instance: the same job, op,
events and materializations, a run in the UI like any other (tagged
``librarian/executor=api``), about 0.4 s of Dagster bookkeeping instead of 2 s.

The job is ``jobs.ingest.ingest_books`` with the resources the caller gives, not the whole
code location: the API loads no sensors and no other flow. What happens when the API dies
mid-run is ``jobs.run_liveness``'s business.

``execute_in_process`` records no code-location origin on its runs, and the UI's
*Re-execute* needs one (without it Dagster fails with ``CheckError: Expected non-None
value``). The API's instance therefore gives the ``ingest_books`` runs it creates the origin
of the ``librarian`` code location, the one the webserver and daemon load: a re-execution
is then an ordinary queued run of the same job and config, which re-reads the catalogue and
does only what is still missing (stored books are skipped, refused ones stay refused).
"""

import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

# Dagster has no public way to give an in-process run the origin the UI re-executes from
# (dagster-io/dagster#19458, closed unfixed); tests/test_ui_truth.py re-executes such a run
# through the UI's own GraphQL mutation, so an upgrade that breaks this fails there.
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from librarian_dagster.dagster_instance import API_INSTANCE_FILE
from librarian_dagster.jobs.ingest import ingest_books
from librarian_dagster.jobs.names import (
    API_EXECUTOR,
    EXECUTOR_TAG,
    FINISHED_TAG,
    INGEST_JOB,
    LOCATION_NAME,
    PROCESS_TAG,
    REPOSITORY_NAME,
)
from librarian_dagster.jobs.run_liveness import ACTIVE_RUN_STATUSES, process_token

# Op logs of API runs go to the event log (the UI); the API's own log gets warnings only.
_QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ingest_job_origin() -> RemoteJobOrigin:
    """Where ``ingest_books`` lives for the webserver: the ``librarian`` code location.

    A location known by name only: re-execution reads the location and repository names and
    loads the job from the webserver's own workspace, which maps the name to the module.
    """
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(LOCATION_NAME),
            repository_name=REPOSITORY_NAME,
        ),
        job_name=INGEST_JOB,
    )


_ORIGIN_MARK = "_librarian_records_origin"


def _recording_origin(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """Make ``instance`` give the ``ingest_books`` runs it creates their code-location origin."""
    if getattr(instance, _ORIGIN_MARK, False):
        return instance
    create: Callable[..., dg.DagsterRun] = instance.create_run_for_job
    origin = ingest_job_origin()

    def create_run_for_job(job_def: dg.JobDefinition, *args: Any, **kwargs: Any) -> dg.DagsterRun:
        if job_def.name == INGEST_JOB and kwargs.get("remote_job_origin") is None:
            kwargs["remote_job_origin"] = origin
        return create(job_def, *args, **kwargs)

    instance.create_run_for_job = create_run_for_job  # type: ignore[method-assign]
    setattr(instance, _ORIGIN_MARK, True)
    return instance


def api_instance() -> dg.DagsterInstance:
    """``DAGSTER_HOME``'s instance as the API process uses it: without compute-log capture.

    Its configuration is ``dagster_instance.api_instance_config``, written beside
    ``dagster.yaml`` by the CLI.
    """
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError("DAGSTER_HOME is not set")
    if not os.path.isfile(os.path.join(home, API_INSTANCE_FILE)):
        # Without it Dagster would quietly open a default instance: the wrong storage.
        raise RuntimeError(
            f"{home}/{API_INSTANCE_FILE} is missing; `librarian serve` (or init) writes it"
        )
    return dg.DagsterInstance.from_config(home, config_filename=API_INSTANCE_FILE)


def execute_ingest_run(
    instance: dg.DagsterInstance,
    run_config: dict[str, object],
    tags: dict[str, str],
    resources: Mapping[str, object],
) -> dg.ExecuteInProcessResult:
    """Execute one ``ingest_books`` run in this process (the caller's thread).

    Whatever happens, the run is then tagged finished (see ``run_liveness.run_is_active``);
    if Dagster itself raised, the run is also marked failed rather than left "started".
    """
    # Dagster's own run ids are uuid4 strings; making one here lets us find the run
    # whatever execute_in_process does.
    run_id = str(uuid.uuid4())
    # Only what the job's ops use: each resource bound costs the run's set-up (~5 ms each
    # on the development VM), and the API executes one run per burst of commits.
    needed = {k: v for k, v in resources.items() if k in ingest_books.required_resource_keys}
    try:
        return ingest_books.execute_in_process(
            run_config={**run_config, **_QUIET_LOGGERS},
            instance=_recording_origin(instance),
            tags={**tags, EXECUTOR_TAG: API_EXECUTOR, PROCESS_TAG: process_token()},
            resources=needed,
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
