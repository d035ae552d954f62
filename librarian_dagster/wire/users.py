"""``/users``: accounts and their levels (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from librarian_dagster.states import UserLevel
from librarian_dagster.wire.common import RequestModel, ResponseModel

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
