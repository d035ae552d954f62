"""``/api/v2/uploads``: stage, stream content, commit, status, cancel (read_append).

Thin: each handler opens one unit of work and calls ``services.uploads``. The content route
hands the body to ``services.upload_content.receive_content`` in a worker thread, which writes and
hashes it (never buffered whole); its size limit is the upload's declared size, not the
app-wide JSON limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import anyio.to_thread
from litestar import Request, Response, Router, delete, get, post, put
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
)

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import (
    CatalogueDep,
    LauncherDep,
    SettingsDep,
    StoresDep,
    UploadSlotsDep,
)
from librarian_dagster.api.openapi import problems, streamed_body
from librarian_dagster.api.streams import AsyncBodyReader
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.services import upload_content, uploads
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.movers.receive import FILE_MEDIA_TYPE, TAR_MEDIA_TYPE
from librarian_dagster.wire import (
    API_PREFIX,
    MAX_ID,
    TransferManager,
    UploadCommit,
    UploadCreate,
    UploadInfo,
    UploadList,
    UploadStatusQuery,
)

# An upload id in a path: 1 to 2^63-1 (400 otherwise), so no id overflows the catalogue.
UploadId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="The upload's id.")]


def upload_info(transfer: IncomingTransfer, settings: LibrarianSettings) -> UploadInfo:
    return UploadInfo(
        upload_id=transfer.id,
        name=transfer.name,
        size=transfer.size,
        checksum=transfer.checksum,
        status=transfer.status,
        store=transfer.store.name,
        staging_path=transfer.staging_path,
        transfer_managers=[
            TransferManager(kind="local", staging_path=transfer.staging_path),
            TransferManager(
                kind="http",
                url=f"{settings.api.public_url}{API_PREFIX}/uploads/{transfer.id}/content",
            ),
        ],
        failure_reason=transfer.failure_reason,
        created_at=transfer.created_at,
        updated_at=transfer.updated_at,
        completed_at=transfer.completed_at,
    )


@post(
    "/uploads",
    operation_id="stageUpload",
    sync_to_thread=True,
    status_code=HTTP_201_CREATED,
    responses={
        200: ResponseSpec(UploadInfo, description="An upload of this name was resumed"),
        **problems(409, 413, 507),
    },
)
def stage_upload(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    data: JSONBody[UploadCreate],
) -> Response[UploadInfo]:
    with catalogue.session() as session:
        transfer, created = uploads.stage_upload(
            session,
            stores,
            name=data.name,
            size=data.size,
            checksum=data.checksum,
            principal=request.user,
            source=settings.name,
            ingest=settings.ingest,
        )
        info = upload_info(transfer, settings)
    return Response(info, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


@put(
    "/uploads/{upload_id:int}/content",
    operation_id="putUploadContent",
    request_max_body_size=None,
    summary="Stream a file (application/octet-stream) or a directory (application/x-tar)",
    operation_class=streamed_body(FILE_MEDIA_TYPE, TAR_MEDIA_TYPE),
    responses=problems(404, 408, 409, 415, 429, 507),
)
async def put_content(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    upload_slots: UploadSlotsDep,
    upload_id: UploadId,
) -> UploadInfo:
    media_type = (
        request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    )
    body = AsyncBodyReader(
        request.stream(),
        settings.api.body_idle_timeout_seconds,
        settings.api.min_body_bytes_per_second,
    )

    def receive() -> UploadInfo:
        upload_content.receive_content(
            catalogue,
            stores,
            upload_id,
            request.user,
            body,
            media_type=media_type,
            default_algorithm=settings.checksum.algorithm,
            ingest=settings.ingest,
        )
        with catalogue.session() as session:
            return upload_info(uploads.get_upload(session, upload_id, request.user), settings)

    def owned() -> None:  # 404 for someone else's upload before it can take any slot
        with catalogue.session() as session:
            uploads.get_upload(session, upload_id, request.user)

    await anyio.to_thread.run_sync(owned)
    left_to_us: list[Callable[[], None]] = []  # (still empty if the slot is refused)
    try:
        with upload_slots.hold(upload_id, request.user.name) as left_to_us:
            return await anyio.to_thread.run_sync(receive, limiter=upload_slots.limiter)
    finally:
        for action in left_to_us:  # a cancel that came while the body arrived: its removal
            await anyio.to_thread.run_sync(action)


@post(
    "/uploads/{upload_id:int}/commit",
    operation_id="commitUpload",
    sync_to_thread=True,
    status_code=HTTP_202_ACCEPTED,
    responses=problems(404, 409),
)
def commit_upload(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    stores: StoresDep,
    launcher: LauncherDep,
    upload_slots: UploadSlotsDep,
    upload_id: UploadId,
    data: JSONBody[UploadCommit],
) -> UploadInfo:
    upload_slots.refuse_if_receiving(upload_id, "committed")
    with catalogue.session() as session:
        transfer = uploads.commit_upload(
            session,
            stores,
            upload_id,
            data.checksum,
            request.user,
            launching=launcher is not None,
        )
        info = upload_info(transfer, settings)
    if launcher is not None:
        launcher.request(
            [StagedItem(info.upload_id, info.name, info.size, committed_by=request.user.name)]
        )
    return info


@get(
    "/uploads/{upload_id:int}",
    operation_id="getUpload",
    sync_to_thread=True,
    responses=problems(404),
)
def get_upload(
    request: Request, settings: SettingsDep, catalogue: CatalogueDep, upload_id: UploadId
) -> UploadInfo:
    with catalogue.session() as session:
        return upload_info(uploads.get_upload(session, upload_id, request.user), settings)


@post(
    "/uploads/status",
    operation_id="getUploads",
    sync_to_thread=True,
    status_code=HTTP_200_OK,
    responses=problems(404),
)
def get_uploads(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    data: JSONBody[UploadStatusQuery],
) -> UploadList:
    with catalogue.session() as session:
        found = uploads.get_uploads(session, data.upload_ids, request.user)
        return UploadList(uploads=[upload_info(t, settings) for t in found])


@delete(
    "/uploads/{upload_id:int}",
    operation_id="cancelUpload",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(404, 409),
)
def cancel_upload(
    request: Request,
    catalogue: CatalogueDep,
    stores: StoresDep,
    upload_slots: UploadSlotsDep,
    upload_id: UploadId,
) -> None:
    uploads.cancel_upload(
        catalogue, stores, upload_id, request.user, leave_removal=upload_slots.leave_to_body
    )


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[
            stage_upload,
            put_content,
            commit_upload,
            get_upload,
            get_uploads,
            cancel_upload,
        ],
        guards=[requires(UserLevel.READ_APPEND)],
        tags=["uploads"],
    )
