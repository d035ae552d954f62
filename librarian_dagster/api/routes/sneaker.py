"""``/api/v2/sneaker/*``: drives that carried books between librarians (SneakerNet).

- ``POST /sneaker/ingest`` (``read_append``): check a drive mounted here against its
  manifest and record its books as waiting (``services.sneaker_ingest.plan_ingest``); a
  sensor asks for the run that copies them. 202 with where each book stands.
- ``GET /sneaker/ingest/{drive_uuid}`` (``read_append``): where each book stands now.
- ``POST /sneaker/complete`` (``callback``, peers only): the destination holds books of one
  of our drives (``services.sneaker_return.complete_drive_books``).
"""

from __future__ import annotations

from litestar import Request, Router, get, post
from litestar.params import FromPath, JSONBody

from librarian_dagster.api.auth import requires, requires_peer
from librarian_dagster.api.dependencies import CatalogueDep, SettingsDep, StoresDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services.peers import require_calling_peer
from librarian_dagster.services.sneaker_ingest import drive_status, plan_ingest
from librarian_dagster.services.sneaker_return import complete_drive_books
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import API_PREFIX
from librarian_dagster.wire.sneaker import (
    SNEAKER_COMPLETE,
    SNEAKER_INGEST,
    SneakerComplete,
    SneakerCompleteAck,
    SneakerIngestRequest,
    SneakerIngestStatus,
)

# A manifest of 100,000 books with long names: far beyond the 1 MiB JSON default.
MAX_MANIFEST_BODY = 256 * 1024 * 1024


@post(
    SNEAKER_INGEST,
    operation_id="ingestDrive",
    sync_to_thread=True,
    status_code=202,
    request_max_body_size=MAX_MANIFEST_BODY,
    responses=problems(400, 404, 409, 507),
    summary="Ingest a drive mounted on the librarian's machine, from its manifest",
)
def ingest_drive(
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    data: JSONBody[SneakerIngestRequest],
) -> SneakerIngestStatus:
    with catalogue.session() as session:
        return plan_ingest(session, settings, stores, data).status


@get(
    f"{SNEAKER_INGEST}/{{drive_uuid:str}}",
    operation_id="driveIngestStatus",
    sync_to_thread=True,
    responses=problems(404),
    summary="Where each book of a drive's ingest stands",
)
def ingest_status(catalogue: CatalogueDep, drive_uuid: FromPath[str]) -> SneakerIngestStatus:
    with catalogue.session() as session:
        return drive_status(session, drive_uuid)


@post(
    SNEAKER_COMPLETE,
    operation_id="sneakerComplete",
    sync_to_thread=True,
    status_code=200,
    request_max_body_size=MAX_MANIFEST_BODY,
    responses=problems(403, 404),
    summary="A peer holds books of one of our drives: record its copies",
)
def complete(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    data: JSONBody[SneakerComplete],
) -> SneakerCompleteAck:
    with catalogue.session() as session:
        caller = require_calling_peer(session, request.user)
        return complete_drive_books(session, settings, caller, data)


def router(catalogue: Catalogue) -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[
            Router(
                path="/",
                route_handlers=[ingest_drive, ingest_status],
                guards=[requires(UserLevel.READ_APPEND)],
            ),
            Router(
                path="/",
                route_handlers=[complete],
                guards=[requires(UserLevel.CALLBACK), requires_peer(catalogue, admin_too=False)],
            ),
        ],
        tags=["sneaker"],
    )
