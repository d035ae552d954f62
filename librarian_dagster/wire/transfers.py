"""``/transfers`` (admin): books on their way to peers (and from them), retry and cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from librarian_dagster.states import TransferStatus
from librarian_dagster.wire.common import ResponseModel

Direction = Literal["outgoing", "incoming"]


class TransferInfo(ResponseModel):
    id: int
    direction: Direction
    peer: str | None = Field(default=None, description="Where it goes, or where it came from.")
    name: str
    size: int
    status: TransferStatus
    attempts: int = 0
    batch_id: int | None = None
    mover: str | None = None
    task_id: str | None = None
    failure_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    next_attempt_at: datetime | None = None


class TransferList(ResponseModel):
    transfers: list[TransferInfo]
    next_cursor: str | None = None
