"""``GET /api/v2/ping``: who we are and whether the catalogue and stores are usable.

Unauthenticated so peers and load balancers can probe it; it says nothing secret (no paths,
no counts of files), only health.
"""

from __future__ import annotations

import threading
import time

from litestar import Router, get
from litestar.datastructures import State

from librarian_dagster import __version__
from librarian_dagster.api.schemas import API_PREFIX, CatalogueHealth, PingResponse, StoreHealth
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.migrate import current_revision
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

LEFTOVER_STAGING_SECONDS = 7 * 24 * 3600
# Counting leftovers walks every staging tree; /ping is unauthenticated and probed often, so
# a count is reused for this long (uploads a week old do not appear by the second).
LEFTOVER_COUNT_SECONDS = 300.0


class LeftoverCounts:
    """Leftover staging per store, counted at most once per ``LEFTOVER_COUNT_SECONDS``.

    One per app; the lock makes concurrent probes wait for one walk instead of each walking.
    """

    def __init__(self, ttl: float = LEFTOVER_COUNT_SECONDS) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def count(self, store: LocalStore) -> int:
        with self._lock:
            counted = self._counts.get(store.name)
            now = time.monotonic()
            if counted is None or now - counted[0] > self._ttl:
                counted = (now, len(store.leftover_staging(LEFTOVER_STAGING_SECONDS)))
                self._counts[store.name] = counted
            return counted[1]


def catalogue_health(catalogue: Catalogue) -> CatalogueHealth:
    backend = catalogue.engine.dialect.name
    try:
        catalogue.ping()
        return CatalogueHealth(
            ok=True, backend=backend, revision=current_revision(catalogue.engine)
        )
    except Exception as error:  # any driver error means "unhealthy", reported, not raised
        return CatalogueHealth(ok=False, backend=backend, error=type(error).__name__)


def store_health(
    settings: LibrarianSettings, stores: dict[str, LocalStore], leftover_counts: LeftoverCounts
) -> list[StoreHealth]:
    result = []
    for config in settings.stores:
        store = stores[config.name]
        try:
            health = store.health()
            leftovers = leftover_counts.count(store)
        except OSError as error:
            result.append(
                StoreHealth(
                    name=config.name,
                    kind=config.kind,
                    enabled=config.enabled,
                    ingestable=config.ingestable,
                    ok=False,
                    error=error.strerror or str(error),
                )
            )
            continue
        result.append(
            StoreHealth(
                name=config.name,
                kind=config.kind,
                enabled=config.enabled,
                ingestable=config.ingestable,
                ok=health.ok,
                free_bytes=health.free_bytes,
                total_bytes=health.total_bytes,
                leftover_staging=leftovers,
            )
        )
    return result


@get("/ping", operation_id="ping", sync_to_thread=True, summary="Name, version and health")
def ping(state: State) -> PingResponse:
    settings: LibrarianSettings = state.settings
    catalogue = catalogue_health(state.catalogue)
    stores = store_health(settings, state.stores, state.leftover_counts)
    return PingResponse(
        name=settings.name,
        version=__version__,
        healthy=catalogue.ok and all(store.ok for store in stores if store.enabled),
        catalogue=catalogue,
        stores=stores,
    )


def router() -> Router:
    return Router(path=API_PREFIX, route_handlers=[ping], tags=["health"])
