"""SneakerNet from a script: ask a librarian to ingest a drive mounted on its machine.

::

    from librarian_dagster.client.sneaker import ingest_drive, wait_for_drive
    status = ingest_drive(client, "/mnt/drive1")            # the manifest on the drive
    status = wait_for_drive(client, status.drive_uuid)      # every book stored or refused

``read_manifest`` reads a manifest file kept apart from the drive (``--manifest FILE``), so
that a garbled one is refused here, in one line, before anything is asked of the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from librarian_dagster.client.client import LibrarianClient
from librarian_dagster.client.errors import LibrarianError, read_model
from librarian_dagster.wire.sneaker import (
    SNEAKER_INGEST,
    SneakerIngestRequest,
    SneakerIngestStatus,
    SneakerManifest,
    parse_manifest,
)

# Checking a drive of thousands of books (a stat each) may take a while.
PLAN_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
MAX_MANIFEST_BYTES = 256 << 20


def read_manifest(path: Path) -> SneakerManifest:
    """The manifest in ``path``; LibrarianError in one line if it is not one."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise LibrarianError(f"cannot read {path}: {error.strerror or error}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise LibrarianError(f"{path} is not a manifest: over {MAX_MANIFEST_BYTES} bytes")
    try:
        return parse_manifest(raw, str(path))
    except ValueError as error:
        raise LibrarianError(str(error)) from None


def ingest_drive(
    client: LibrarianClient,
    drive: str,
    manifest: SneakerManifest | None = None,
    store: str | None = None,
) -> SneakerIngestStatus:
    """Ask the librarian to ingest the drive at ``drive`` (a path on its machine)."""
    body = SneakerIngestRequest(drive=drive, manifest=manifest, store=store)
    response = client.request(
        "POST",
        SNEAKER_INGEST,
        json=body.model_dump(mode="json", exclude_none=True),
        timeout=PLAN_TIMEOUT,
    )
    return read_model(response, SneakerIngestStatus)


def drive_status(client: LibrarianClient, drive_uuid: str) -> SneakerIngestStatus:
    response = client.request("GET", f"{SNEAKER_INGEST}/{drive_uuid}")
    return read_model(response, SneakerIngestStatus)


def wait_for_drive(
    client: LibrarianClient,
    drive_uuid: str,
    *,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
    seen: Callable[[SneakerIngestStatus], None] | None = None,
) -> SneakerIngestStatus:
    """Poll until every book of the drive is stored or refused (``seen`` gets each status)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = drive_status(client, drive_uuid)
        if seen is not None:
            seen(status)
        if status.done:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise LibrarianError(f"drive {drive_uuid}: not done after {timeout:.0f} s")
        time.sleep(poll_seconds)
