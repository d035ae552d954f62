"""``/api/v2/stores`` (admin): the stores, their drives and space; enable or disable one.

The same ``services.stores`` functions as ``librarian store list|enable|disable``.
"""

from __future__ import annotations

from dataclasses import asdict

from litestar import Router, get, patch
from litestar.params import FromPath, JSONBody

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep, SettingsDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.services import stores
from librarian_dagster.services.errors import NotFound
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import API_PREFIX, StoreInfo, StoreList, StoreUpdate


def _overview(
    settings: SettingsDep, catalogue: CatalogueDep, only: str | None = None
) -> list[StoreInfo]:
    with catalogue.session() as session:
        return [StoreInfo(**asdict(s)) for s in stores.store_overview(session, settings, only)]


@get("/stores", operation_id="listStores", sync_to_thread=True, summary="Stores")
def list_stores(settings: SettingsDep, catalogue: CatalogueDep) -> StoreList:
    return StoreList(stores=_overview(settings, catalogue))


@patch(
    "/stores/{name:str}",
    operation_id="updateStore",
    sync_to_thread=True,
    responses=problems(404),
    summary="Enable or disable a store",
)
def update_store(
    settings: SettingsDep, catalogue: CatalogueDep, name: FromPath[str], data: JSONBody[StoreUpdate]
) -> StoreInfo:
    with catalogue.session() as session:
        stores.set_store_enabled(session, name, data.enabled)
    found = _overview(settings, catalogue, name)
    if not found:  # removed between the two transactions
        raise NotFound(f"no store named {name!r}")
    return found[0]


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_stores, update_store],
        guards=[requires(UserLevel.ADMIN)],
        tags=["stores"],
    )
