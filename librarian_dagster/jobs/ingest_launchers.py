"""The API's launchers that turn committed uploads into ``ingest_books`` runs at once.

Each is a ``services.ingest_launcher.Batcher``: a burst of commits arrives as one batch,
whose ``books`` partitions are added in one call and which is grouped into runs capped in
books and bytes. ``InProcessRunLauncher`` (the default, ``ingest.commit_runs = "api"``)
executes the runs itself (``jobs.api_executor``); ``QueuedRunLauncher`` (``"queue"``)
submits them to the run queue through the webserver's GraphQL API. A batch that cannot be
handled is handed back to the ingest sensor at once (``launched_at`` cleared).

Modules that import Dagster are imported when first needed (the in-process launcher's
warm-up thread does it at start), so the API answers while Dagster loads (~1.5 s here).
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.jobs.names import (
    BOOKS_PARTITIONS,
    INGEST_JOB,
    LOCATION_NAME,
    REPOSITORY_NAME,
)
from librarian_dagster.services.ingest_launcher import Batcher
from librarian_dagster.services.ingest_requests import StagedItem, clear_launched, group_for_runs
from librarian_dagster.settings import IngestSettings, LibrarianSettings

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster_graphql import DagsterGraphQLClient

log = logging.getLogger(__name__)


def _run_config(group: list[StagedItem]) -> dict[str, object]:
    from librarian_dagster.jobs.ingest import ingest_run_config

    return ingest_run_config([item.transfer_id for item in group])


def _run_tags(group: list[StagedItem]) -> dict[str, str]:
    from librarian_dagster.jobs.ingest import ingest_run_tags

    return ingest_run_tags(group)


class _DagsterLauncher(Batcher):
    """Adds the books' partitions, groups them into runs and hands each group to ``launch``."""

    def __init__(
        self,
        name: str,
        catalogue: Catalogue,
        settings: IngestSettings,
        instance: DagsterInstance | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._settings = settings
        self._instance = instance  # None: DAGSTER_HOME's, opened on first use
        self._instance_lock = threading.Lock()
        super().__init__(name)

    @property
    def instance(self) -> DagsterInstance:
        with self._instance_lock:
            if self._instance is None:
                self._instance = self.open_instance()
            return self._instance

    def open_instance(self) -> DagsterInstance:
        from dagster import DagsterInstance

        return DagsterInstance.get()

    def handle(self, batch: list[StagedItem]) -> None:
        self.instance.add_dynamic_partitions(BOOKS_PARTITIONS, [item.name for item in batch])
        groups = group_for_runs(
            batch, self._settings.max_books_per_run, self._settings.max_bytes_per_run
        )
        for group in groups:
            self.launch(group)

    def launch(self, group: list[StagedItem]) -> None:
        raise NotImplementedError

    def handback(self, batch: list[StagedItem]) -> None:
        try:
            clear_launched(self._catalogue, [item.transfer_id for item in batch])
        except Exception:  # the sensor still retries once the request is overdue
            log.exception("could not hand %d upload(s) back to the sensor", len(batch))


class QueuedRunLauncher(_DagsterLauncher):
    """Submits ``ingest_books`` runs to the run queue through the webserver's GraphQL API."""

    def __init__(
        self,
        catalogue: Catalogue,
        settings: IngestSettings,
        webserver_host: str,
        webserver_port: int,
    ) -> None:
        self._host = webserver_host
        self._port = webserver_port
        self._client: DagsterGraphQLClient | None = None
        super().__init__("ingest-launcher", catalogue, settings)

    def launch(self, group: list[StagedItem]) -> None:
        if self._client is None:
            from dagster_graphql import DagsterGraphQLClient

            self._client = DagsterGraphQLClient(self._host, port_number=self._port, timeout=30)
        self._client.submit_job_execution(
            INGEST_JOB,
            repository_location_name=LOCATION_NAME,
            repository_name=REPOSITORY_NAME,
            run_config=_run_config(group),
            tags=_run_tags(group),
        )


class InProcessRunLauncher(_DagsterLauncher):
    """Executes ``ingest_books`` runs in this (the API's) process, one at a time.

    No queue wait and no worker process start, so a small upload is stored in well under a
    second. Runs are serial: at most one ingest in the API process, on top of the queue's
    limit for runs the sensor requests (two ``execute_in_process`` runs in parallel threads
    deadlock in Dagster's logging setup; docs/architecture.md). On start, runs left
    "started" by a previous API process that died are marked failed (the sensor re-requests
    their books).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        settings: LibrarianSettings,
        instance: DagsterInstance | None = None,
    ) -> None:
        self._config_file = str(settings.config_file or "")
        super().__init__("ingest-runner", catalogue, settings.ingest, instance)
        threading.Thread(target=self._warm_up, name="ingest-warm-up", daemon=True).start()

    def open_instance(self) -> DagsterInstance:
        from librarian_dagster.jobs.api_executor import api_instance

        return api_instance()

    def _warm_up(self) -> None:
        """Import the job and open the instance now, not at the first commit; fail dead runs."""
        try:
            importlib.import_module("librarian_dagster.jobs.api_executor")
            from librarian_dagster.jobs.run_liveness import fail_abandoned_runs

            for run_id in fail_abandoned_runs(self.instance):
                log.warning("run %s: its API process exited before it finished; failed", run_id)
        except Exception:
            log.exception("could not check for runs abandoned by a previous API process")

    def launch(self, group: list[StagedItem]) -> None:
        from librarian_dagster.jobs import api_executor
        from librarian_dagster.resources import librarian_resources

        result = api_executor.execute_ingest_run(
            self.instance,
            _run_config(group),
            _run_tags(group),
            resources=librarian_resources(self._config_file),
        )
        if not result.success:
            log.warning("ingest run %s did not succeed; its log is in the UI", result.run_id)
            self.handback(group)  # books it did not claim: the sensor's, at its next tick
