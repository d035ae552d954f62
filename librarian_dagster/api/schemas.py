"""Wire models: the JSON bodies of the REST API, shared by server and client.

Importing this module pulls in pydantic only (no Litestar), so the client can use it. Every
request model forbids unknown fields: a typo in a request is an error, not a silent default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from librarian_dagster.catalogue.models import TransferStatus, UserLevel

API_PREFIX = "/api/v2"


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(ResponseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class StoreHealth(ResponseModel):
    name: str
    kind: str
    enabled: bool
    ingestable: bool
    ok: bool
    free_bytes: int | None = None
    total_bytes: int | None = None
    leftover_staging: int | None = None
    error: str | None = None


class CatalogueHealth(ResponseModel):
    ok: bool
    backend: str
    revision: str | None = None
    error: str | None = None


class PingResponse(ResponseModel):
    name: str
    version: str
    healthy: bool
    catalogue: CatalogueHealth
    stores: list[StoreHealth]


Password = Annotated[str, Field(min_length=8, max_length=1024)]


class UserCreate(RequestModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    password: Password
    level: UserLevel = UserLevel.READ_ONLY


class UserUpdate(RequestModel):
    password: Password | None = None
    level: UserLevel | None = None


class UserInfo(ResponseModel):
    name: str
    level: UserLevel
    created_at: datetime
    password_changed_at: datetime


class UserList(ResponseModel):
    users: list[UserInfo]


# -- uploads ---------------------------------------------------------------------------

CHECKSUM_FIELD = Field(
    default=None,
    max_length=160,
    description='"<algorithm>:<hex>" (xxh3_128, blake3, sha256, md5); "alg:::hex" accepted',
)


class UploadCreate(RequestModel):
    """Stage an upload: the name it will have, its size (bytes; sum of files for a directory)."""

    name: Annotated[str, Field(min_length=1, max_length=4096)]
    size: Annotated[int, Field(ge=0)]
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

    upload_ids: list[int] = Field(min_length=1, max_length=10_000)


class UploadList(ResponseModel):
    uploads: list[UploadInfo]


# -- files -------------------------------------------------------------------------------


class InstanceInfo(ResponseModel):
    store: str
    path: str
    available: bool
    created_at: datetime
    verified_at: datetime | None = None


class RemoteInstanceInfo(ResponseModel):
    librarian: str
    store: str
    created_at: datetime
    verified_at: datetime | None = None


class FileSummary(ResponseModel):
    name: str
    size: int
    checksum: str
    is_directory: bool
    uploader: str
    source: str
    created_at: datetime


class FileInfo(FileSummary):
    instances: list[InstanceInfo]
    remote_instances: list[RemoteInstanceInfo]


class FileSearchResult(ResponseModel):
    files: list[FileSummary]
    # Pass as ``cursor`` to get the next page; None when this was the last one.
    next_cursor: str | None = None


MAX_PAGE = 1000
