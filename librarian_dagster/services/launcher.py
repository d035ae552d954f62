"""Asking for ingest runs as soon as uploads are committed (the sensor remains the backstop).

The launchers live in the API process: a background thread collects committed uploads
(gathering a burst into one batch), adds their ``books`` partitions to the Dagster instance
and asks for ``ingest_books`` runs capped in books and bytes. ``InProcessRunLauncher`` (the
default, ``ingest.commit_runs = "api"``) executes them itself; ``QueuedRunLauncher``
(``"queue"``) submits them to the run queue through the webserver's GraphQL API. Anything
that goes wrong is logged and left to the ingest sensor, which requests runs for staged
transfers nobody asked for, or whose request is overdue.

``InlineIngestLauncher`` ingests in a background thread of the same process, calling the same
service: for tests of the API and client that do not start Dagster.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services.ingest import ingest_transfer
from librarian_dagster.services.ingest_requests import (
    BOOKS_PARTITIONS,
    INGEST_JOB,
    LOCATION_NAME,
    REPOSITORY_NAME,
    StagedItem,
    clear_launched,
    group_for_runs,
    run_config,
    run_tags,
)
from librarian_dagster.settings import IngestSettings, LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

if TYPE_CHECKING:
    from dagster import DagsterInstance
    from dagster_graphql import DagsterGraphQLClient

log = logging.getLogger(__name__)

GATHER_GAP = 0.05
GATHER_MAX = 1.0


class IngestLauncher(Protocol):
    def request(self, items: Sequence[StagedItem]) -> None:
        """Ask for these committed transfers to be ingested soon; never raises.

        The caller has already marked them as requested (``commit_upload(launching=True)``).
        """


class _Batcher:
    """A daemon thread that takes requests from a queue and handles whatever has piled up."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[StagedItem] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def request(self, items: Sequence[StagedItem]) -> None:
        for item in items:
            self._queue.put(item)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Gather a burst (a client committing hundreds of uploads) into one request: keep
            # taking items while they arrive within GATHER_GAP, for at most GATHER_MAX. A
            # lone commit waits GATHER_GAP; a burst costs a few runs instead of dozens.
            deadline = time.monotonic() + GATHER_MAX
            while time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get(timeout=GATHER_GAP))
                except queue.Empty:
                    break
            try:
                self.handle(batch)
            except Exception:
                log.exception(
                    "could not request ingest of %d upload(s); the sensor will", len(batch)
                )
                self.handback(batch)

    def handle(self, batch: list[StagedItem]) -> None:
        raise NotImplementedError

    def handback(self, batch: list[StagedItem]) -> None:
        """Handling failed: make the batch the sensor's business at once (default: nothing)."""


class _DagsterLauncher(_Batcher):
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
            run_config=run_config([item.transfer_id for item in group]),
            tags=run_tags(group),
        )


class InProcessRunLauncher(_DagsterLauncher):
    """Executes ``ingest_books`` runs in this (the API's) process, one at a time.

    See ``jobs.api_runs``: no queue wait and no worker process start, so a small upload is
    stored in well under a second. Runs are serial: at most one ingest in the API process,
    on top of the queue's limit for runs the sensor requests. On start, runs left "started"
    by a previous API process that died are marked failed (the sensor re-requests their
    books).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        settings: LibrarianSettings,
        instance: DagsterInstance | None = None,
    ) -> None:
        self._config_file = str(settings.config_file or "")
        super().__init__("ingest-runner", catalogue, settings.ingest, instance)
        self.request_cleanup()

    def open_instance(self) -> DagsterInstance:
        from librarian_dagster.jobs.api_runs import api_instance

        return api_instance()

    def request_cleanup(self) -> None:
        threading.Thread(target=self._warm_up, name="ingest-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """Open the instance and load the job now, not on the first commit; fail dead runs."""
        try:
            from librarian_dagster.jobs.api_runs import fail_abandoned_runs, ingest_job

            ingest_job()
            for run_id in fail_abandoned_runs(self.instance):
                log.warning("run %s: its API process exited before it finished; failed", run_id)
        except Exception:
            log.exception("could not check for runs abandoned by a previous API process")

    def launch(self, group: list[StagedItem]) -> None:
        from librarian_dagster.jobs.api_runs import execute_ingest_run
        from librarian_dagster.resources.librarian import CatalogueResource, StoresResource

        result = execute_ingest_run(
            self.instance,
            run_config([item.transfer_id for item in group]),
            run_tags(group),
            resources={
                "catalogue": CatalogueResource(config_file=self._config_file),
                "stores": StoresResource(config_file=self._config_file),
            },
        )
        if not result.success:
            log.warning("ingest run %s did not succeed; its log is in the UI", result.run_id)
            self.handback(group)  # books it did not claim: the sensor's, at its next tick


class InlineIngestLauncher(_Batcher):
    """Ingests in this process (no Dagster): for tests and single-process tools."""

    def __init__(self, catalogue: Catalogue, stores: dict[str, LocalStore]) -> None:
        self._catalogue = catalogue
        self._stores = stores
        self.run_id = f"inline-{uuid.uuid4().hex[:8]}"
        super().__init__("inline-ingest")

    def handle(self, batch: list[StagedItem]) -> None:
        for item in batch:
            ingest_transfer(
                self._catalogue,
                self._stores,
                item.transfer_id,
                run_id=self.run_id,
                run_is_active=lambda run_id: run_id == self.run_id,
            )
