"""SneakerNet on the wire: a drive's manifest, asking to ingest a drive, and the callback.

The manifest travels with the drive (``librarian-manifest.json`` at its root) and may be
sent on its own (``librarian sneaker ingest --manifest FILE``): it says which librarian
filled which drive (UUID) with which books, and what each must hash to. The destination
trusts nothing on the drive that the manifest does not vouch for, and nothing in the
manifest that the bytes do not bear out.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from librarian_dagster.wire.clones import ChecksumText, CloneName, ShortName
from librarian_dagster.wire.common import (
    ByteCount,
    JsonBool,
    RequestModel,
    ResponseModel,
    first_problem,
)

MANIFEST_FORMAT = "librarian-sneaker-manifest"
MANIFEST_VERSION = 1
# Where a manifest is written on the drive, next to its identity.
MANIFEST_FILE = "librarian-manifest.json"
# Books on one drive (a 20 TB drive of 10 GB books holds ~2,000).
MAX_DRIVE_BOOKS = 100_000
# Where books are on a drive, below its root: the store area, by name.
DRIVE_STORE_DIR = "store"
# The list in a /sneaker/complete body: the outbox joins those owed to one peer per drive.
COMPLETE_LIST_KEY = "books"
SNEAKER_INGEST = "/sneaker/ingest"
SNEAKER_COMPLETE = "/sneaker/complete"

DriveUuid = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class ManifestBook(RequestModel):
    name: CloneName
    size: ByteCount
    checksum: ChecksumText
    path: CloneName = Field(description="Where it is on the drive, below its root.")
    is_directory: JsonBool = False
    created: datetime = Field(description="When it was first catalogued at its source.")
    uploader: ShortName
    source: ShortName = Field(description="The librarian where the book was first ingested.")
    origin_store: ShortName | None = Field(
        default=None,
        description="The filling librarian's store that holds the book too (null: none does).",
    )

    @model_validator(mode="after")
    def _path_is_its_name(self) -> ManifestBook:
        if self.path != f"{DRIVE_STORE_DIR}/{self.name}":
            raise ValueError(f"book {self.name!r}: path must be {DRIVE_STORE_DIR}/<name>")
        return self


class SneakerManifest(RequestModel):
    """What a drive carries, as the librarian that filled it wrote it."""

    format: Literal["librarian-sneaker-manifest"]
    version: Literal[1]
    librarian: ShortName = Field(description="The librarian that filled the drive.")
    store: ShortName = Field(description="Its sneaker store the drive belongs to.")
    drive_uuid: DriveUuid
    trip: int = Field(
        default=1, ge=1, description="The drive's round trip: one more after each wipe."
    )
    created: datetime
    books: list[ManifestBook] = Field(max_length=MAX_DRIVE_BOOKS)

    @model_validator(mode="after")
    def _names_are_unique(self) -> SneakerManifest:
        names = [book.name for book in self.books]
        if len(set(names)) != len(names):
            raise ValueError("a book is listed twice")
        return self


def parse_manifest(raw: bytes, shown: str) -> SneakerManifest:
    """The manifest in ``raw`` (read from ``shown``); ValueError saying, in one line, why
    it is not one (truncated, not JSON, a field missing or wrong)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        where = f" at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise ValueError(f"{shown} is not a manifest: not JSON{where} (truncated?)") from None
    try:
        return SneakerManifest.model_validate(data)
    except ValidationError as error:
        raise ValueError(f"{shown} is not a manifest: {first_problem(error)}") from None


class SneakerIngestRequest(RequestModel):
    """``POST /sneaker/ingest``: ingest the drive mounted at ``drive`` on the server."""

    drive: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="The drive's mount point, on the librarian's machine."
    )
    manifest: SneakerManifest | None = Field(
        default=None, description="The manifest; by default the one on the drive."
    )
    store: ShortName | None = Field(
        default=None, description="The store to copy into; by default the first ingestable."
    )


class SneakerBook(ResponseModel):
    name: str
    size: int
    state: Literal["waiting", "copying", "stored", "present", "refused"]
    reason: str | None = None


class SneakerIngestStatus(ResponseModel):
    drive_uuid: str
    trip: int = Field(default=1, description="The drive's round trip these books came on.")
    origin: str = Field(description="The librarian that filled the drive.")
    store: str = Field(description="Where the books go here.")
    run_id: str | None = Field(default=None, description="The ingest_sneaker_drive run.")
    books: list[SneakerBook]

    @property
    def done(self) -> bool:
        return all(book.state in ("stored", "present", "refused") for book in self.books)


class DeliveredBook(RequestModel):
    name: CloneName
    checksum: ChecksumText
    store: ShortName = Field(description="The destination's store that holds it now.")


class SneakerComplete(RequestModel):
    """``POST /sneaker/complete``: the destination holds these books of that drive."""

    drive_uuid: DriveUuid
    store: ShortName = Field(description="The origin's sneaker store (the drive's).")
    books: list[DeliveredBook] = Field(min_length=1, max_length=MAX_DRIVE_BOOKS)


class SneakerCompleteAck(ResponseModel):
    recorded: int = Field(description="Books now known to be held by the caller.")
    unknown: list[str] = Field(description="Books we have no copy of on that drive.")
