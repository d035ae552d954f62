"""``/files``: search the catalogue and locate one file's copies (read_only).

``FileQuery`` is the one definition of the search filters: the route builds it from the query
string, ``services.files.search_files`` runs it, ``LibrarianClient`` and ``librarian search``
send it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, field_validator

from librarian_dagster.states import CorruptionReason
from librarian_dagster.wire.common import RequestModel, ResponseModel

# Files per page of GET /files (the limit's upper bound).
MAX_PAGE = 1000
# A name glob is at most as long as a name (in characters; names are at most 1024 UTF-8
# bytes) and holds few wildcards: LIKE matching costs grow with each ``%``.
MAX_GLOB_CHARS = 1024
MAX_GLOB_WILDCARDS = 32
# Longest uploader or source filter: account and librarian names are at most 64 characters.
MAX_FILTER_CHARS = 256


class FileQuery(RequestModel):
    """Filters and paging of a file search; unset (or empty) filters match everything."""

    name: str | None = Field(
        default=None,
        max_length=MAX_GLOB_CHARS,
        description=(
            "Name glob, matching whole names: ? is one character and * any run of characters,"
            " neither crossing /; ** is any run, / included (2026/11/* finds 2026/11/a but not"
            f" 2026/11/25/b; 2026/11/** finds both). At most {MAX_GLOB_WILDCARDS} wildcards."
        ),
    )
    uploader: str | None = Field(default=None, max_length=MAX_FILTER_CHARS)
    source: str | None = Field(
        default=None, max_length=MAX_FILTER_CHARS, description="The librarian the file came from."
    )
    created_since: datetime | None = Field(default=None, description="Created at or after.")
    created_until: datetime | None = Field(default=None, description="Created before.")
    limit: Annotated[int, Field(description=f"Files per page, 1 to {MAX_PAGE}.")] = 100
    cursor: str | None = Field(
        default=None, max_length=64, description="next_cursor of the previous page."
    )

    @field_validator("name")
    @classmethod
    def _few_wildcards(cls, pattern: str | None) -> str | None:
        if pattern is not None and pattern.count("*") + pattern.count("?") > MAX_GLOB_WILDCARDS:
            raise ValueError(f"a name glob may hold at most {MAX_GLOB_WILDCARDS} wildcards")
        return pattern

    @field_validator("limit")
    @classmethod
    def _page_size(cls, limit: int) -> int:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        return limit

    @field_validator("created_since", "created_until")
    @classmethod
    def _zoned(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        if moment.tzinfo is None:
            raise ValueError("times must carry a timezone (e.g. 2026-11-25T00:00:00Z)")
        try:  # the catalogue compares in UTC; 0001-01-01T00:00+14:00 has no UTC equivalent
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValueError("time is outside the years 1 to 9999 once converted to UTC") from None

    def params(self) -> dict[str, str | int]:
        """The query string that carries this query (unset and empty filters left out)."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in self.model_dump().items()
            if value not in (None, "")
        }


class InstanceInfo(ResponseModel):
    store: str
    path: str
    available: bool
    created_at: datetime
    verified_at: datetime | None = None
    # Set while an integrity check's record says this copy is bad: "mismatch" (corrupt),
    # "missing" or "unreadable"; the copy is out of service until repaired or dismissed.
    corrupt: CorruptionReason | None = None


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
