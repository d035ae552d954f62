"""``GET /api/v2/ping``: who we are and whether the catalogue and stores are usable.

Unauthenticated so peers and load balancers can probe it; it says nothing secret (no paths,
no names, no counts of files), only health and a few counts that health needs. It is
unhealthy while any copy is known corrupt or missing (``corrupt_copies`` says how many):
a librarian holding a damaged book is not well, even if every process is up.

A store counts as it is in the catalogue (``librarian store disable`` takes it out of the
verdict). A sneaker store is judged by its drive: not the right drive, or none where one is
expected, is not ok; a drive that is away while it is in transit (or on its way back) is
where it should be.

Per store it counts uploads that went idle (staged, no bytes for ``IDLE_UPLOAD_SECONDS``,
not receiving now: a client that died mid-upload shows here until its upload expires) and the
bytes live uploads reserve, and the leftover staging the hourly ``clean_staging`` run last
reported (``services.integrity_staging``): read from the catalogue, never walked here.
"""

from __future__ import annotations

from litestar import Router, get
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from librarian_dagster import __version__
from librarian_dagster.api.dependencies import (
    CatalogueDep,
    SettingsDep,
    StoresDep,
    UploadSlotsDep,
)
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.migrate import current_revision
from librarian_dagster.catalogue.models import Store
from librarian_dagster.services.corrupt import count_unresolved
from librarian_dagster.services.integrity_staging import leftover_counts
from librarian_dagster.services.stores import drive_verdict
from librarian_dagster.services.upload_reservations import idle_uploads, reserved_bytes
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState, StoreKind
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.wire import API_PREFIX, CatalogueHealth, PingResponse, StoreHealth

IDLE_UPLOAD_SECONDS = 3600.0


def catalogue_health(catalogue: Catalogue) -> CatalogueHealth:
    backend = catalogue.engine.dialect.name
    try:
        catalogue.ping()
        return CatalogueHealth(
            ok=True, backend=backend, revision=current_revision(catalogue.engine)
        )
    except Exception as error:  # any driver error means "unhealthy", reported, not raised
        return CatalogueHealth(ok=False, backend=backend, error=type(error).__name__)


def corrupt_copies(catalogue: Catalogue) -> int | None:
    """Unresolved corrupt-copy records; None when the catalogue cannot say."""
    try:
        with catalogue.session() as session:
            return count_unresolved(session)
    except SQLAlchemyError:  # the catalogue's own health says what is wrong
        return None


def upload_counts(
    catalogue: Catalogue, settings: LibrarianSettings, busy: frozenset[int]
) -> dict[str, tuple[int, int]]:
    """Per store name: (idle uploads, bytes reserved by live uploads); empty if unreadable."""
    try:
        with catalogue.session() as session:
            ids = dict(session.execute(select(Store.name, Store.id)).tuples().all())
            return {
                name: (
                    idle_uploads(session, store_id, IDLE_UPLOAD_SECONDS, busy),
                    reserved_bytes(session, settings.ingest, store_id=store_id),
                )
                for name, store_id in ids.items()
            }
    except SQLAlchemyError:  # the catalogue's own health says what is wrong
        return {}


def staging_leftovers(catalogue: Catalogue) -> dict[str, int]:
    """Per store: leftover staging the last ``clean_staging`` run reported; empty if
    unreadable. Counted by that run, not here: a public route walks no staging tree."""
    try:
        with catalogue.session() as session:
            return leftover_counts(session)
    except SQLAlchemyError:  # the catalogue's own health says what is wrong
        return {}


def store_rows(catalogue: Catalogue) -> dict[str, Store]:
    """The stores' catalogue rows by name (enabled, drive state and UUID); empty if unreadable."""
    try:
        with catalogue.session() as session:
            rows = {row.name: row for row in session.scalars(select(Store))}
            session.expunge_all()
            return rows
    except SQLAlchemyError:  # the catalogue's own health says what is wrong
        return {}


def store_health(
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    leftovers: dict[str, int],
    uploads: dict[str, tuple[int, int]],
    rows: dict[str, Store] | None = None,
) -> list[StoreHealth]:
    result = []
    rows = rows or {}
    for config in settings.stores:
        store = stores[config.name]
        row = rows.get(config.name)
        enabled = row.enabled if row is not None else config.enabled
        state = row.state.value if row is not None and row.state is not None else None
        if config.kind == StoreKind.SNEAKER:
            problem, _ = drive_verdict(config, settings.name, row)
            ok = problem is None
            if not ok or state in (DriveState.IN_TRANSIT, DriveState.RETURNED):
                result.append(
                    StoreHealth(
                        name=config.name,
                        kind=config.kind,
                        enabled=enabled,
                        ingestable=config.ingestable,
                        ok=ok,
                        state=state,
                        error=problem,
                    )
                )
                continue
        try:
            health = store.health()
        except OSError as error:
            result.append(
                StoreHealth(
                    name=config.name,
                    kind=config.kind,
                    enabled=enabled,
                    ingestable=config.ingestable,
                    ok=False,
                    state=state,
                    error=error.strerror or str(error),
                )
            )
            continue
        result.append(
            StoreHealth(
                name=config.name,
                kind=config.kind,
                enabled=enabled,
                ingestable=config.ingestable,
                ok=health.ok,
                state=state,
                free_bytes=health.free_bytes,
                total_bytes=health.total_bytes,
                leftover_staging=leftovers.get(config.name, 0),
                idle_uploads=uploads.get(config.name, (None, None))[0],
                reserved_bytes=uploads.get(config.name, (None, None))[1],
            )
        )
    return result


@get("/ping", operation_id="ping", sync_to_thread=True, summary="Name, version and health")
def ping(
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    upload_slots: UploadSlotsDep,
) -> PingResponse:
    catalogue_state = catalogue_health(catalogue)
    uploads = upload_counts(catalogue, settings, upload_slots.active_ids())
    leftovers = staging_leftovers(catalogue)
    store_states = store_health(settings, stores, leftovers, uploads, store_rows(catalogue))
    corrupt = corrupt_copies(catalogue)
    return PingResponse(
        name=settings.name,
        version=__version__,
        healthy=catalogue_state.ok
        and all(store.ok for store in store_states if store.enabled)
        and corrupt == 0,
        catalogue=catalogue_state,
        stores=store_states,
        corrupt_copies=corrupt,
    )


def router() -> Router:
    return Router(path=API_PREFIX, route_handlers=[ping], tags=["health"])
