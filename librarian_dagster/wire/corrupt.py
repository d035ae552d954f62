"""``/corrupt``: copies the integrity check found bad, until repaired or dismissed (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from librarian_dagster.states import CorruptionReason, CorruptionStatus
from librarian_dagster.wire.common import Id, RequestModel, ResponseModel


class CorruptCopy(ResponseModel):
    id: Id
    name: str
    store: str
    reason: CorruptionReason
    status: CorruptionStatus
    expected_checksum: str
    actual_checksum: str | None = None
    detail: str | None = None
    detected_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None


class CorruptList(ResponseModel):
    corrupt: list[CorruptCopy]
    # Unresolved records in the whole catalogue (not only on this page).
    unresolved: int
    next_cursor: str | None = None


class CorruptDismiss(RequestModel):
    """Close a record by hand; the copy stays out of service (nothing is deleted)."""

    note: Annotated[str, Field(min_length=1, max_length=2000, description="Why it is closed.")]
