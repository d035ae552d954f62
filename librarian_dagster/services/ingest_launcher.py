"""Asking for ingest as soon as uploads are committed (the ingest sensor remains the backstop).

The API's commit route hands each committed upload to an ``IngestLauncher``. Launchers are
``Batcher`` threads: a burst of commits (a client committing hundreds of uploads) is
gathered into one batch, so it costs a few runs instead of dozens. What a batch becomes
depends on the launcher: the Dagster launchers (``jobs.ingest_launchers``) turn it into
``ingest_books`` runs; ``InlineIngestLauncher`` ingests in this process, calling the same
service, for tests of the API and the client that do not start Dagster. Anything that goes
wrong is logged and left to the ingest sensor, which requests runs for staged transfers
nobody asked for, or whose request is overdue.
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
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

log = logging.getLogger(__name__)

# A lone commit waits this long for company; a burst is gathered for at most GATHER_MAX.
GATHER_GAP = 0.05
GATHER_MAX = 1.0


class IngestLauncher(Protocol):
    def request(self, items: Sequence[StagedItem]) -> None:
        """Ask for these committed transfers to be ingested soon; never raises.

        The caller has already marked them as requested (``commit_upload(launching=True)``).
        """


class Batcher:
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
            # Keep taking items while they arrive within GATHER_GAP, for at most GATHER_MAX.
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


class InlineIngestLauncher(Batcher):
    """Ingests in this process (no Dagster): for tests and single-process tools."""

    def __init__(
        self, catalogue: Catalogue, stores: dict[str, LocalStore], settings: LibrarianSettings
    ) -> None:
        self._catalogue = catalogue
        self._stores = stores
        self._settings = settings
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
                settings=self._settings,
            )
