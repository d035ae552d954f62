"""``GET /api/v2/ping``: who we are and whether the catalogue and stores are usable.

Unauthenticated so peers and load balancers can probe it; it says nothing secret (no paths,
no counts of files), only health.
"""

from __future__ import annotations

from litestar import Router, get
from litestar.datastructures import State

from librarian_dagster import __version__
from librarian_dagster.api.schemas import API_PREFIX, CatalogueHealth, PingResponse, StoreHealth
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.migrate import current_revision
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

LEFTOVER_STAGING_SECONDS = 7 * 24 * 3600


def catalogue_health(catalogue: Catalogue) -> CatalogueHealth:
    backend = catalogue.engine.dialect.name
    try:
        catalogue.ping()
        return CatalogueHealth(
            ok=True, backend=backend, revision=current_revision(catalogue.engine)
        )
    except Exception as error:  # any driver error means "unhealthy", reported, not raised
        return CatalogueHealth(ok=False, backend=backend, error=type(error).__name__)


def store_health(settings: LibrarianSettings, stores: dict[str, LocalStore]) -> list[StoreHealth]:
    result = []
    for config in settings.stores:
        store = stores[config.name]
        try:
            health = store.health()
            leftovers = len(store.leftover_staging(LEFTOVER_STAGING_SECONDS))
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
    stores = store_health(settings, state.stores)
    return PingResponse(
        name=settings.name,
        version=__version__,
        healthy=catalogue.ok and all(store.ok for store in stores if store.enabled),
        catalogue=catalogue,
        stores=stores,
    )


def router() -> Router:
    return Router(path=API_PREFIX, route_handlers=[ping], tags=["health"])
