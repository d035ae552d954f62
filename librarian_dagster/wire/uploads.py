"""``/uploads``: stage, stream content, commit, status, cancel (read_append)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from librarian_dagster.states import TransferStatus
from librarian_dagster.wire.common import ByteCount, Id, RequestModel, ResponseModel

CHECKSUM_FIELD = Field(
    default=None,
    max_length=160,
    description='"<algorithm>:<hex>" (xxh3_128, blake3, sha256, md5); "alg:::hex" accepted',
)


class UploadCreate(RequestModel):
    """Stage an upload: the name it will have, its size (bytes; sum of files for a directory)."""

    name: Annotated[str, Field(min_length=1, max_length=4096)]
    size: ByteCount
    checksum: str | None = CHECKSUM_FIELD


class UploadCommit(RequestModel):
    """The bytes are in staging. The checksum may come here when the client hashed while copying."""

    checksum: str | None = CHECKSUM_FIELD


class TransferManager(ResponseModel):
    """One way to get the bytes into staging.

    ``local``: copy onto a shared filesystem at ``staging_path`` (a file, or a directory tree).
    ``http``: ``PUT`` the bytes to ``url`` (``application/octet-stream`` for a file,
    ``application/x-tar`` for a directory).
    """

    kind: Literal["local", "http"]
    staging_path: str | None = None
    url: str | None = None


class UploadInfo(ResponseModel):
    upload_id: int
    name: str
    size: int
    checksum: str | None
    status: TransferStatus
    store: str
    staging_path: str
    transfer_managers: list[TransferManager]
    failure_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class UploadStatusQuery(RequestModel):
    """Several uploads' status in one request (clients waiting on many uploads)."""

    upload_ids: list[Id] = Field(min_length=1, max_length=10_000)


class UploadList(ResponseModel):
    uploads: list[UploadInfo]
