"""``POST /files/{name}/validate``: a librarian re-reads its copies of a book and says so."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from librarian_dagster.wire.common import ResponseModel

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


class FileValidation(ResponseModel):
    librarian: str
    name: str
    # The checksum this librarian's catalogue holds for the book.
    checksum: str
    copies: list[CopyValidation]
