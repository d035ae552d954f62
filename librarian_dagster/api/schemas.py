"""Wire models: the JSON bodies of the REST API, shared by server and client.

Importing this module pulls in pydantic only (no Litestar), so the client can use it. Every
request model forbids unknown fields: a typo in a request is an error, not a silent default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from librarian_dagster.catalogue.models import UserLevel

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
