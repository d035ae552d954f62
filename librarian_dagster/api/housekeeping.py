"""Work the API process does on a timer: expire uploads that went idle.

Runs inside the API because the API is what knows which upload bodies are arriving right
now (``UploadSlots``): those are never expired, however long they take. Every
``SWEEP_SECONDS`` a worker thread runs ``upload_reservations.expire_idle_uploads``; a failure
is logged and the next sweep tries again. If the API is down, nothing expires, and nothing
needs to: reservations idle past expiry stop counting by themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from litestar import Litestar

from librarian_dagster.api.upload_slots import UploadSlots
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services.upload_reservations import expire_idle_uploads
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

log = logging.getLogger(__name__)

SWEEP_SECONDS = 300.0


def housekeeping(
    settings: LibrarianSettings,
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    slots: UploadSlots,
    every: float | None = None,
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    """A Litestar lifespan that sweeps idle uploads every ``every`` (``SWEEP_SECONDS``) s."""
    period = SWEEP_SECONDS if every is None else every

    def sweep() -> None:
        expire_idle_uploads(catalogue, stores, settings.ingest, busy=slots.active_ids())

    async def loop() -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(sweep)
            except Exception:  # the catalogue may be down for a while: try again later
                log.exception("expiring idle uploads failed; trying again in %g s", period)
            await anyio.sleep(period)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(loop)
            yield
            tasks.cancel_scope.cancel()

    return lifespan
