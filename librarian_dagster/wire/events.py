"""``/events``: the operator event log, newest first, until resolved (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from librarian_dagster.states import Severity
from librarian_dagster.wire.common import Id, RequestModel, ResponseModel

MAX_RESOLVE = 1000


class EventInfo(ResponseModel):
    id: Id
    severity: Severity
    kind: str
    message: str
    subject: str | None = None
    details: dict[str, Any] | None = None
    # How often the same cause (kind and subject) was raised while this event was open.
    count: int = 1
    created_at: datetime
    last_at: datetime | None = None
    resolved: bool = False
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None


class EventList(ResponseModel):
    events: list[EventInfo]
    # Open events in the whole catalogue (not only on this page, whatever the filters).
    open: int
    next_cursor: str | None = None


class EventResolve(RequestModel):
    """Close events by id; some kinds also lift what they hold (a store's burst guard)."""

    ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_RESOLVE)]
    note: Annotated[str, Field(min_length=1, max_length=2000, description="Why it is closed.")]


class EventResolved(ResponseModel):
    events: list[EventInfo]
