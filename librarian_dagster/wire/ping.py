"""``GET /ping``: name, version and the health of the catalogue and the stores."""

from __future__ import annotations

from librarian_dagster.wire.common import ResponseModel


class StoreHealth(ResponseModel):
    name: str
    kind: str
    enabled: bool
    ingestable: bool
    ok: bool
    free_bytes: int | None = None
    total_bytes: int | None = None
    leftover_staging: int | None = None
    # Uploads staged here that received no bytes for an hour (until they expire).
    idle_uploads: int | None = None
    # Declared bytes of uploads staged here and not yet committed.
    reserved_bytes: int | None = None
    # A sneaker store's drive: filling, full, in_transit, returned.
    state: str | None = None
    error: str | None = None


class CatalogueHealth(ResponseModel):
    ok: bool
    backend: str
    revision: str | None = None
    error: str | None = None


class PingResponse(ResponseModel):
    name: str
    version: str
    # False while the catalogue or an enabled store is unusable, or any copy is known corrupt.
    healthy: bool
    catalogue: CatalogueHealth
    stores: list[StoreHealth]
    # Copies found corrupt or missing and not yet repaired or dismissed (None: unreadable).
    corrupt_copies: int | None = None
