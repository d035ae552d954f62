"""``POST /files/{name}/validate``: a librarian re-reads its copies of a book and says so."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field

from librarian_dagster.wire.clones import CloneName
from librarian_dagster.wire.common import RequestModel, ResponseModel

VALIDATE_SUFFIX = "/validate"


def validate_path(name: str) -> str:
    """The route that validates ``name`` (relative to the API prefix)."""
    return f"/files/{quote(name.lstrip('/'), safe='/')}{VALIDATE_SUFFIX}"


class CopyValidation(ResponseModel):
    """One copy, as it was read just now (or why it could not be)."""

    store: str
    # What the bytes hash to now; None when they could not be read.
    checksum: str | None = None
    matches: bool
    # When it was read (or found unreadable).
    when: datetime
    # Why it does not match or was not read: missing, unreadable, store unreadable, away...
    problem: str | None = None
    # On a rolling store: kept only while it is recent, so it never counts as the copy that
    # lets another rolling store delete its own (two would delete each other's).
    rolling: bool = False


class FileValidation(ResponseModel):
    librarian: str
    name: str
    # The checksum this librarian's catalogue holds for the book.
    checksum: str
    copies: list[CopyValidation]


CLONES_RESEND = "/clones/resend"
MAX_RESEND = 1024


class ResendRequest(RequestModel):
    """A peer whose copies of these books are corrupt asks us to send ours again."""

    names: Annotated[
        list[CloneName],
        Field(min_length=1, max_length=MAX_RESEND),
    ]


class ResendAnswer(ResponseModel):
    name: str
    # queued: a clone transfer will send it; on_its_way: one already is; not_held: we have
    # no copy in service; not_yours: we do not know the caller held it; unknown: no such book.
    answer: Literal["queued", "on_its_way", "not_held", "not_yours", "unknown"]
    transfer_id: int | None = None


class ResendResponse(ResponseModel):
    items: list[ResendAnswer]
