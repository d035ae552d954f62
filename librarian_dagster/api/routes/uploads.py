"""``/api/v2/uploads``: stage, stream content, commit, status, cancel (read_append).

Thin: each handler opens one unit of work and calls ``services.uploads``. The content route
streams the body to a worker thread that writes and hashes it (never buffered whole); its
size limit is the upload's declared size, not the app-wide JSON limit.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import anyio.to_thread
from litestar import Request, Response, Router, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
)

from librarian_dagster.api.auth import requires
from librarian_dagster.api.schemas import (
    API_PREFIX,
    TransferManager,
    UploadCommit,
    UploadCreate,
    UploadInfo,
    UploadList,
    UploadStatusQuery,
)
from librarian_dagster.api.streams import AsyncBodyReader
from librarian_dagster.catalogue.models import IncomingTransfer, UserLevel
from librarian_dagster.services import uploads
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import InvalidRequest
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.checksums import CHUNK_SIZE, Checksum
from librarian_dagster.storage.receive import (
    TAR_MEDIA_TYPE,
    ReceiveError,
    receive_file,
    receive_tar,
)


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


@post("/uploads", operation_id="stageUpload", sync_to_thread=True, status_code=HTTP_201_CREATED)
def stage_upload(
    request: Request, state: State, data: JSONBody[UploadCreate]
) -> Response[UploadInfo]:
    settings: LibrarianSettings = state.settings
    with state.catalogue.session() as session:
        transfer, created = uploads.stage_upload(
            session,
            state.stores,
            name=data.name,
            size=data.size,
            checksum=data.checksum,
            principal=request.user,
            source=settings.name,
            max_size=settings.ingest.max_upload_bytes,
        )
        info = upload_info(transfer, settings)
    return Response(info, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


def _remove_partial(path: Path) -> None:
    """Drop what an interrupted or refused content upload left at the data path."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _receive(
    state: State, upload_id: int, principal: Principal, body: io.RawIOBase, media_type: str
) -> UploadInfo:
    settings: LibrarianSettings = state.settings
    with state.catalogue.session() as session:
        transfer, staging = uploads.upload_for_content(session, state.stores, upload_id, principal)
        declared_size, declared_checksum = transfer.size, transfer.checksum
    expected = Checksum.parse(declared_checksum) if declared_checksum else None
    algorithm = expected.algorithm if expected else settings.checksum.algorithm
    _remove_partial(staging.data_path)
    stream = io.BufferedReader(body, CHUNK_SIZE)
    receive = receive_tar if media_type == TAR_MEDIA_TYPE else receive_file
    try:
        received = receive(stream, staging.data_path, algorithm, declared_size)
        if received.size != declared_size:
            raise ReceiveError(
                f"size mismatch: declared {declared_size} bytes, received {received.size}"
            )
        if expected is not None and received.checksum != expected:
            raise ReceiveError(
                f"checksum mismatch: expected {expected}, received {received.checksum}"
            )
    except ReceiveError as error:
        _remove_partial(staging.data_path)
        raise InvalidRequest(str(error)) from None
    except BaseException:
        _remove_partial(staging.data_path)
        raise
    with state.catalogue.session() as session:
        return upload_info(uploads.get_upload(session, upload_id, principal), settings)


@put(
    "/uploads/{upload_id:int}/content",
    operation_id="putUploadContent",
    request_max_body_size=None,
    summary="Stream a file (application/octet-stream) or a directory (application/x-tar)",
)
async def put_content(request: Request, state: State, upload_id: FromPath[int]) -> UploadInfo:
    media_type = (
        request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    )
    body = AsyncBodyReader(request.stream())
    return await anyio.to_thread.run_sync(
        _receive, state, upload_id, request.user, body, media_type
    )


@post(
    "/uploads/{upload_id:int}/commit",
    operation_id="commitUpload",
    sync_to_thread=True,
    status_code=HTTP_202_ACCEPTED,
)
def commit_upload(
    request: Request, state: State, upload_id: FromPath[int], data: JSONBody[UploadCommit]
) -> UploadInfo:
    settings: LibrarianSettings = state.settings
    launcher = state.get("ingest_launcher")
    with state.catalogue.session() as session:
        transfer = uploads.commit_upload(
            session,
            state.stores,
            upload_id,
            data.checksum,
            request.user,
            launching=launcher is not None,
        )
        info = upload_info(transfer, settings)
    if launcher is not None:
        launcher.request([StagedItem(info.upload_id, info.name, info.size)])
    return info


@get("/uploads/{upload_id:int}", operation_id="getUpload", sync_to_thread=True)
def get_upload(request: Request, state: State, upload_id: FromPath[int]) -> UploadInfo:
    with state.catalogue.session() as session:
        return upload_info(uploads.get_upload(session, upload_id, request.user), state.settings)


@post("/uploads/status", operation_id="getUploads", sync_to_thread=True, status_code=HTTP_200_OK)
def get_uploads(request: Request, state: State, data: JSONBody[UploadStatusQuery]) -> UploadList:
    with state.catalogue.session() as session:
        found = uploads.get_uploads(session, data.upload_ids, request.user)
        return UploadList(uploads=[upload_info(t, state.settings) for t in found])


@delete(
    "/uploads/{upload_id:int}",
    operation_id="cancelUpload",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
)
def cancel_upload(request: Request, state: State, upload_id: FromPath[int]) -> None:
    with state.catalogue.session() as session:
        staging = uploads.cancel_upload(session, state.stores, upload_id, request.user)
    uploads.discard(staging)


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
