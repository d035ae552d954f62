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
"""

import os
import uuid
from collections.abc import Mapping

import dagster as dg

from librarian_dagster.dagster_instance import API_INSTANCE_FILE
from librarian_dagster.jobs.ingest import ingest_books
from librarian_dagster.jobs.names import API_EXECUTOR, EXECUTOR_TAG, FINISHED_TAG, PROCESS_TAG
from librarian_dagster.jobs.run_liveness import ACTIVE_RUN_STATUSES, process_token

# Op logs of API runs go to the event log (the UI); the API's own log gets warnings only.
_QUIET_LOGGERS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


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
            instance=instance,
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
