"""``/api/v2/transfers`` (admin): books on their way to peers (or from them); retry, cancel."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Router, get, post
from litestar.params import FromQuery, PathParameter

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.services import transfers
from librarian_dagster.states import TransferStatus, UserLevel
from librarian_dagster.wire import API_PREFIX, MAX_ID, TransferInfo, TransferList
from librarian_dagster.wire.transfers import Direction

TransferId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="An outgoing transfer.")]


@get(
    "/transfers",
    operation_id="listTransfers",
    sync_to_thread=True,
    responses=problems(404),
    summary="Transfers",
)
def list_transfers(
    catalogue: CatalogueDep,
    direction: FromQuery[Direction] = "outgoing",
    peer: FromQuery[str | None] = None,
    status: FromQuery[list[TransferStatus] | None] = None,
    limit: FromQuery[int] = 100,
    cursor: FromQuery[str | None] = None,
) -> TransferList:
    """Newest first; ``status`` may be given several times."""
    with catalogue.session() as session:
        rows, next_cursor = transfers.list_transfers(
            session,
            direction=direction,
            peer=peer,
            statuses=status or (),
            limit=limit,
            cursor=cursor,
        )
        return TransferList(transfers=rows, next_cursor=next_cursor)


@post(
    "/transfers/{transfer_id:int}/retry",
    operation_id="retryTransfer",
    sync_to_thread=True,
    status_code=200,
    responses=problems(404, 409),
    summary="Send a failed or cancelled book again",
)
def retry_transfer(catalogue: CatalogueDep, transfer_id: TransferId) -> TransferInfo:
    with catalogue.session() as session:
        return transfers.retry_transfer(session, transfer_id)


@post(
    "/transfers/{transfer_id:int}/cancel",
    operation_id="cancelTransfer",
    sync_to_thread=True,
    status_code=200,
    responses=problems(404, 409),
    summary="Stop sending a book",
)
def cancel_transfer(
    request: Request, catalogue: CatalogueDep, transfer_id: TransferId
) -> TransferInfo:
    with catalogue.session() as session:
        return transfers.cancel_transfer(session, transfer_id, request.user.name)


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_transfers, retry_transfer, cancel_transfer],
        guards=[requires(UserLevel.ADMIN)],
        tags=["transfers"],
    )
