"""``/api/v2/corrupt``: copies the integrity check found bad (admin).

``GET`` lists unresolved records, oldest first, cursor-paged (``include_resolved`` for the
history); ``POST /corrupt/{id}/dismiss`` closes one by hand with a note. Repair itself is
the integrity flow's: a copy that verifies again closes its own record.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Router, get, post
from litestar.params import FromQuery, JSONBody, PathParameter

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.catalogue.models import CorruptFile
from librarian_dagster.services import corrupt
from librarian_dagster.services.errors import InvalidRequest
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import (
    API_PREFIX,
    MAX_ID,
    MAX_PAGE,
    CorruptCopy,
    CorruptDismiss,
    CorruptList,
)

RecordId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="The record's id.")]


def copy_info(record: CorruptFile) -> CorruptCopy:
    return CorruptCopy(
        id=record.id,
        name=record.file.name,
        store=record.store.name,
        reason=record.reason,
        status=record.status,
        expected_checksum=record.expected_checksum,
        actual_checksum=record.actual_checksum,
        detail=record.detail,
        detected_at=record.detected_at,
        updated_at=record.updated_at,
        resolved_at=record.resolved_at,
        resolved_by=record.resolved_by,
        note=record.note,
    )


@get("/corrupt", operation_id="listCorrupt", sync_to_thread=True, summary="Corrupt copies")
def list_corrupt(
    catalogue: CatalogueDep,
    include_resolved: FromQuery[bool] = False,
    limit: FromQuery[int] = 100,
    cursor: FromQuery[str | None] = None,
) -> CorruptList:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    with catalogue.session() as session:
        rows, next_cursor = corrupt.list_records(
            session, include_resolved=include_resolved, limit=limit, cursor=cursor
        )
        return CorruptList(
            corrupt=[copy_info(row) for row in rows],
            unresolved=corrupt.count_unresolved(session),
            next_cursor=next_cursor,
        )


@post(
    "/corrupt/{record_id:int}/dismiss",
    operation_id="dismissCorrupt",
    sync_to_thread=True,
    status_code=200,
    responses=problems(404, 409),
    summary="Close a corrupt-copy record by hand",
)
def dismiss_corrupt(
    request: Request,
    catalogue: CatalogueDep,
    record_id: RecordId,
    data: JSONBody[CorruptDismiss],
) -> CorruptCopy:
    with catalogue.session() as session:
        return copy_info(corrupt.dismiss(session, record_id, request.user.name, data.note))


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_corrupt, dismiss_corrupt],
        guards=[requires(UserLevel.ADMIN)],
        tags=["integrity"],
    )
