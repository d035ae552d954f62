"""``/clones/*``: what peers say to each other while a book travels (level ``callback``).

Ids in a request are always the *receiver's* own: the sender's outgoing transfer ids in
what the destination sends back (``complete``, ``fail`` from the destination), the
destination's incoming transfer ids in what the sender sends (``staged``, ``fail`` from the
source). Every route is idempotent: callbacks are delivered at least once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from librarian_dagster.states import MoverName, StageAnswer, TransferStatus
from librarian_dagster.wire.common import (
    ByteCount,
    Id,
    JsonBool,
    RequestModel,
    ResponseModel,
)

#: Books per request: a batch is at most this many (``[transfer] batch_max`` ≤ it).
MAX_CLONE_ITEMS = 10_000

# The routes, below the API prefix (the outbox records them as the call it owes).
CLONES_STAGE = "/clones/stage"
CLONES_STAGED = "/clones/staged"
CLONES_COMPLETE = "/clones/complete"
CLONES_FAIL = "/clones/fail"
CLONES_STATUS = "/clones/status"
CloneName = Annotated[str, Field(min_length=1, max_length=4096)]
ChecksumText = Annotated[str, Field(min_length=1, max_length=200)]
ShortName = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(min_length=1, max_length=4000)]


class CloneItem(RequestModel):
    """One book the sender asks us to stage."""

    transfer_id: Id = Field(description="The sender's outgoing transfer id.")
    name: CloneName
    size: ByteCount
    checksum: ChecksumText
    is_directory: JsonBool = False
    uploader: ShortName
    source: ShortName = Field(description="The librarian where the book was first ingested.")
    source_store: ShortName = Field(description="The sender's store that holds it.")


class CloneStageRequest(RequestModel):
    mover: MoverName = Field(description="The mover that will carry the bytes.")
    items: list[CloneItem] = Field(min_length=1, max_length=MAX_CLONE_ITEMS)


class StagedClone(ResponseModel):
    transfer_id: int = Field(description="The sender's outgoing transfer id (echoed).")
    answer: StageAnswer
    remote_transfer_id: int | None = Field(default=None, description="Our incoming transfer.")
    staging_path: str | None = Field(
        default=None, description="Where the bytes go, as the mover addresses it."
    )
    store: str | None = Field(default=None, description="Where we hold it (held).")
    reason: str | None = None


class CloneStageResponse(ResponseModel):
    items: list[StagedClone]
    endpoint: str | None = Field(
        default=None, description="Our Globus collection, for the globus mover."
    )


class CloneIds(RequestModel):
    """``/clones/staged``: our incoming transfers whose bytes are now in our staging."""

    transfer_ids: list[Id] = Field(min_length=1, max_length=MAX_CLONE_ITEMS)


class CompletedClone(RequestModel):
    transfer_id: Id = Field(description="The receiver's (the sender's) outgoing transfer id.")
    store: ShortName = Field(description="Where the peer stored it.")
    checksum: ChecksumText


class CloneComplete(RequestModel):
    transfers: list[CompletedClone] = Field(min_length=1, max_length=MAX_CLONE_ITEMS)


class FailedClone(RequestModel):
    transfer_id: Id = Field(description="The receiver's transfer id.")
    reason: Reason
    remote_transfer_id: Id | None = Field(
        default=None, description="The caller's transfer id of the failed attempt."
    )


class CloneFail(RequestModel):
    role: Literal["source", "destination"] = Field(
        description="The caller's side: source ids are our incoming, destination our outgoing."
    )
    transfers: list[FailedClone] = Field(min_length=1, max_length=MAX_CLONE_ITEMS)


class CloneAck(ResponseModel):
    """Per id, what the call did: ``recorded``, ``already`` (a repeat), ``ignored`` (stale)."""

    transfer_id: int
    result: Literal["recorded", "already", "ignored"]
    status: TransferStatus


class CloneAcks(ResponseModel):
    items: list[CloneAck]


class CloneQuery(RequestModel):
    """One book the caller sent us long ago and has not heard about."""

    transfer_id: Id = Field(description="The caller's outgoing transfer id.")
    name: CloneName
    checksum: ChecksumText


class CloneStatusRequest(RequestModel):
    transfers: list[CloneQuery] = Field(min_length=1, max_length=MAX_CLONE_ITEMS)


class CloneState(ResponseModel):
    transfer_id: int
    state: Literal["held", "in_progress", "absent", "conflict"]
    status: TransferStatus | None = None
    store: str | None = None
    reason: str | None = None


class CloneStatusResponse(ResponseModel):
    items: list[CloneState]
