"""Asking for ingest runs as soon as uploads are committed (the sensor remains the backstop).

``DagsterIngestLauncher`` runs in the API process: a background thread collects committed
uploads, adds their ``books`` partitions to the Dagster instance and submits one
``ingest_books`` run for the lot through the webserver's GraphQL API (the run queue and its
concurrency limits apply as for sensor runs). Anything that goes wrong is logged and left to
the ingest sensor, which requests runs for staged transfers nobody asked for.

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
from typing import Protocol

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
from librarian_dagster.settings import IngestSettings
from librarian_dagster.storage.local_store import LocalStore

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

    def handle(self, batch: list[StagedItem]) -> None:
        raise NotImplementedError


class DagsterIngestLauncher(_Batcher):
    def __init__(
        self,
        catalogue: Catalogue,
        settings: IngestSettings,
        webserver_host: str,
        webserver_port: int,
    ) -> None:
        self._catalogue = catalogue
        self._settings = settings
        self._host = webserver_host
        self._port = webserver_port
        self._client: object | None = None
        self._instance: object | None = None
        super().__init__("ingest-launcher")

    def handle(self, batch: list[StagedItem]) -> None:
        from dagster import DagsterInstance
        from dagster_graphql import DagsterGraphQLClient

        if self._instance is None:
            self._instance = DagsterInstance.get()
        if self._client is None:
            self._client = DagsterGraphQLClient(self._host, port_number=self._port, timeout=30)
        instance: DagsterInstance = self._instance  # type: ignore[assignment]
        client: DagsterGraphQLClient = self._client  # type: ignore[assignment]
        instance.add_dynamic_partitions(BOOKS_PARTITIONS, [item.name for item in batch])
        groups = group_for_runs(
            batch, self._settings.max_books_per_run, self._settings.max_bytes_per_run
        )
        for group in groups:
            ids = [item.transfer_id for item in group]
            client.submit_job_execution(
                INGEST_JOB,
                repository_location_name=LOCATION_NAME,
                repository_name=REPOSITORY_NAME,
                run_config=run_config(ids),
                tags=run_tags(group),
            )

    def handback(self, batch: list[StagedItem]) -> None:
        clear_launched(self._catalogue, [item.transfer_id for item in batch])


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
