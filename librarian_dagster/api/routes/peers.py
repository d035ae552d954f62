"""``/api/v2/peers`` (admin): the librarians we clone to; ``/api/v2/account`` (any level).

``POST /peers`` takes the pinned body (SPEC §5) and, unless ``check`` is false, first asks
the peer with those credentials who it is and who we are there (``GET /ping`` and
``GET /account`` on it: http(s) only, a bounded timeout, redirects not followed), so a typo
in a URL or a password is refused (400, 502) instead of failing later in a run. The
password is stored encrypted and never returned.
"""

from __future__ import annotations

import logging
import os

import anyio.to_thread
from litestar import Request, Router, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from librarian_dagster import __version__
from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep, PeerLinksDep, SettingsDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.dagster_instance import reload_code_location
from librarian_dagster.services import peers
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import (
    API_PREFIX,
    AccountInfo,
    PeerCheck,
    PeerCreate,
    PeerInfo,
    PeerList,
    PeerUpdate,
)

log = logging.getLogger(__name__)


@get("/account", operation_id="getAccount", summary="Who the caller is here")
async def get_account(request: Request, settings: SettingsDep) -> AccountInfo:
    """The caller's account and level, and this librarian's name: how a peer checks that
    the credentials it was given work, whatever their level."""
    return AccountInfo(
        name=request.user.name,
        level=request.user.level,
        librarian=settings.name,
        version=__version__,
    )


def _reload_ui(settings: LibrarianSettings) -> None:
    """Under ``librarian serve``, the Dagster UI reloads so the peer's asset shows (or goes)
    at once; if it cannot, it shows on its next load (logged, not an error)."""
    if os.environ.get("DAGSTER_HOME"):
        problem = reload_code_location(settings)
        if problem is not None:
            log.info("the Dagster UI did not reload its code location: %s", problem)


@get("/peers", operation_id="listPeers", sync_to_thread=True, summary="Peers")
def list_peers(catalogue: CatalogueDep) -> PeerList:
    with catalogue.session() as session:
        return PeerList(peers=[peers.peer_info(s) for s in peers.list_peers(session)])


def _one(catalogue: CatalogueDep, name: str) -> PeerInfo:
    with catalogue.session() as session:
        return peers.peer_info(peers.peer_summary(session, name))


@get("/peers/{name:str}", operation_id="getPeer", sync_to_thread=True, responses=problems(404))
def get_peer(catalogue: CatalogueDep, name: FromPath[str]) -> PeerInfo:
    return _one(catalogue, name)


@post(
    "/peers",
    operation_id="addPeer",
    sync_to_thread=True,
    status_code=HTTP_201_CREATED,
    responses=problems(409, 502, 503),
    summary="Add a peer (checked first)",
)
def add_peer(
    settings: SettingsDep,
    catalogue: CatalogueDep,
    peer_links: PeerLinksDep,
    data: JSONBody[PeerCreate],
) -> PeerInfo:
    peers.add_peer(catalogue, settings, data, links=peer_links)
    _reload_ui(settings)
    return _one(catalogue, data.name)


@patch(
    "/peers/{name:str}",
    operation_id="updatePeer",
    sync_to_thread=True,
    responses=problems(404, 503),
    summary="Change, pause or resume a peer",
)
def update_peer(
    settings: SettingsDep, catalogue: CatalogueDep, name: FromPath[str], data: JSONBody[PeerUpdate]
) -> PeerInfo:
    with catalogue.session() as session:
        peers.update_peer(session, settings, name, data)
    return _one(catalogue, name)


@delete(
    "/peers/{name:str}",
    operation_id="removePeer",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(404, 409),
)
def remove_peer(settings: SettingsDep, catalogue: CatalogueDep, name: FromPath[str]) -> None:
    with catalogue.session() as session:
        peers.remove_peer(session, name)
    _reload_ui(settings)


@post(
    "/peers/{name:str}/check",
    operation_id="checkPeer",
    status_code=200,
    responses=problems(404),
    summary="Ask a peer who it is and whether our login works",
)
async def check_peer(
    settings: SettingsDep, catalogue: CatalogueDep, peer_links: PeerLinksDep, name: FromPath[str]
) -> PeerCheck:
    return await anyio.to_thread.run_sync(peers.check_peer, catalogue, settings, name, peer_links)


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_peers, get_peer, add_peer, update_peer, remove_peer, check_peer],
        guards=[requires(UserLevel.ADMIN)],
        tags=["peers"],
    )


def account_router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[get_account],
        guards=[requires(UserLevel.CALLBACK)],
        tags=["accounts"],
    )
