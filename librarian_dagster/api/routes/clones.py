"""``/api/v2/clones/*``: what peers say to each other while books travel (level callback).

Thin: each handler finds which peer is calling (its account is named after it; an admin
may act on any transfer) and calls ``services.clones_incoming`` / ``clones_callbacks``.
``stage`` is the only route that may be long (one staging directory per book): its body
may be larger than the JSON default (``MAX_STAGE_BODY``). Removing staged data that a
sender gave up on happens after the transaction that failed it has committed.
"""

from __future__ import annotations

from litestar import Request, Router, post
from litestar.params import JSONBody
from sqlalchemy.orm import Session

from librarian_dagster.api.auth import requires, requires_peer
from librarian_dagster.api.dependencies import CatalogueDep, SettingsDep, StoresDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Librarian
from librarian_dagster.services import (
    clones_callbacks,
    clones_incoming,
    integrity_repair,
)
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.peers import calling_peer, require_calling_peer
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import (
    API_PREFIX,
    CloneAcks,
    CloneComplete,
    CloneFail,
    CloneIds,
    CloneStageRequest,
    CloneStageResponse,
    CloneStatusRequest,
    CloneStatusResponse,
)
from librarian_dagster.wire.clones import (
    CLONES_COMPLETE,
    CLONES_FAIL,
    CLONES_STAGE,
    CLONES_STAGED,
    CLONES_STATUS,
)
from librarian_dagster.wire.integrity import (
    CLONES_RESEND,
    ResendRequest,
    ResendResponse,
)

# 10,000 books with long names: far beyond the 1 MiB JSON default.
MAX_STAGE_BODY = 64 * 1024 * 1024


def _caller(session: Session, principal: Principal) -> Librarian | None:
    """The calling peer; None for an admin who is not one (it may act on any transfer)."""
    if principal.level == UserLevel.ADMIN:
        return calling_peer(session, principal)
    return require_calling_peer(session, principal)


@post(
    CLONES_STAGE,
    operation_id="stageClones",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_STAGE_BODY,
    responses=problems(403, 409, 507),
    summary="Stage a batch of books a peer will send (all or nothing)",
)
def stage(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    data: JSONBody[CloneStageRequest],
) -> CloneStageResponse:
    with catalogue.session() as session:
        sender = require_calling_peer(session, request.user)
        return clones_incoming.stage_clones(session, settings, stores, sender, data)


@post(
    CLONES_STAGED,
    operation_id="clonesStaged",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_STAGE_BODY,
    responses=problems(403, 404),
    summary="A peer's mover delivered these books to our staging",
)
def staged(request: Request, catalogue: CatalogueDep, data: JSONBody[CloneIds]) -> CloneAcks:
    with catalogue.session() as session:
        return clones_callbacks.mark_staged(
            session, _caller(session, request.user), data.transfer_ids
        )


@post(
    CLONES_COMPLETE,
    operation_id="clonesComplete",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_STAGE_BODY,
    responses=problems(403, 404),
    summary="A peer stored books we sent: record its copies",
)
def complete(request: Request, catalogue: CatalogueDep, data: JSONBody[CloneComplete]) -> CloneAcks:
    with catalogue.session() as session:
        return clones_callbacks.complete_clones(session, _caller(session, request.user), data)


@post(
    CLONES_FAIL,
    operation_id="clonesFail",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_STAGE_BODY,
    responses=problems(403, 404),
    summary="Either side reports books that failed",
)
def failed(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    data: JSONBody[CloneFail],
) -> CloneAcks:
    with catalogue.session() as session:
        caller = _caller(session, request.user)
        if data.role == "destination":
            return clones_callbacks.fail_outgoing(session, settings, caller, data.transfers)
        acks, removals = clones_callbacks.fail_from_source(
            session,
            stores,
            caller,
            [(failure.transfer_id, failure.reason) for failure in data.transfers],
        )
    clones_callbacks.discard_all(removals)
    return acks


@post(
    CLONES_STATUS,
    operation_id="clonesStatus",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_STAGE_BODY,
    responses=problems(403),
    summary="What became of books a peer sent us long ago",
)
def status(
    request: Request, catalogue: CatalogueDep, data: JSONBody[CloneStatusRequest]
) -> CloneStatusResponse:
    with catalogue.session() as session:
        sender = require_calling_peer(session, request.user)
        return clones_callbacks.clone_states(session, sender, data)


@post(
    CLONES_RESEND,
    operation_id="resendClones",
    sync_to_thread=True,
    status_code=200,
    responses=problems(403),
    summary="A peer whose copies are corrupt asks us to send ours again",
)
def resend(
    request: Request, catalogue: CatalogueDep, data: JSONBody[ResendRequest]
) -> ResendResponse:
    with catalogue.session() as session:
        caller = require_calling_peer(session, request.user)
        return ResendResponse(items=integrity_repair.resend(session, caller, data.names))


def router(catalogue: Catalogue) -> Router:
    """Stage and status are for peers only (they act as the calling peer); the callbacks
    about existing transfers may also come from an admin, who may act on any transfer."""
    return Router(
        path=API_PREFIX,
        route_handlers=[
            Router(
                path="/",
                route_handlers=[stage, status, resend],
                guards=[requires_peer(catalogue, admin_too=False)],
            ),
            Router(
                path="/",
                route_handlers=[staged, complete, failed],
                guards=[requires_peer(catalogue, admin_too=True)],
            ),
        ],
        guards=[requires(UserLevel.CALLBACK)],
        tags=["clones"],
    )
