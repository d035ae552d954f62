"""The bytes of an upload, streamed over HTTP: written into staging, hashed as they arrive.

``PUT /api/v2/uploads/{id}/content`` hands its body here (in a worker thread). A file for
``application/octet-stream``, a directory for ``application/x-tar`` (``storage.movers.receive``
does the writing and the limits on entries). No transaction is open while bytes arrive; the
upload's ``updated_at`` is touched when a body starts, every ``TOUCH_SECONDS`` while it
arrives and when it ends, so a long body is never taken for an idle upload
(``upload_reservations``).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import Conflict, InvalidRequest, UnsupportedMediaType
from librarian_dagster.services.incoming import Staging, discard_quietly, staging_of
from librarian_dagster.services.upload_reservations import reserved_bytes
from librarian_dagster.services.uploads import owned_upload, refuse_lapsed, require_staging
from librarian_dagster.settings import IngestSettings
from librarian_dagster.states import TransferStatus
from librarian_dagster.storage.checksums import (
    CHUNK_SIZE,
    Checksum,
    EmptyBookError,
    is_empty_directory,
)
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.receive import (
    FILE_MEDIA_TYPE,
    TAR_MEDIA_TYPE,
    EntryLimits,
    ReceiveError,
    receive_file,
    receive_tar,
)
from librarian_dagster.storage.posix import remove_if_present

log = logging.getLogger(__name__)

TOUCH_SECONDS = 600.0


class _Touching(io.RawIOBase):
    """A body that calls ``touch`` at most every ``every`` seconds while it is read."""

    def __init__(self, raw: BinaryIO | io.RawIOBase, touch: Callable[[], None], every: float):
        self._raw = raw
        self._touch = touch
        self._every = every
        self._next = time.monotonic() + every

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)  # type: ignore[union-attr]
        if time.monotonic() >= self._next:
            self._touch()
            self._next = time.monotonic() + self._every
        return n or 0


def _for_content(
    session: Session,
    stores: dict[str, LocalStore],
    upload_id: int,
    principal: Principal,
    ingest: IngestSettings,
) -> tuple[IncomingTransfer, Staging]:
    """The upload whose bytes are about to be received (it must still be ``initiated``).

    Row-locked, so the expiry sweep cannot fail it between this check and the touch.
    """
    transfer = owned_upload(session, upload_id, principal, for_update=True)
    if transfer.status != TransferStatus.INITIATED:
        raise Conflict(f"upload {upload_id} is {transfer.status.value}; it takes no more bytes")
    refuse_lapsed(transfer, ingest)
    staging = staging_of(transfer, stores)
    require_staging(staging, transfer, "is gone")
    return transfer, staging


def receive_content(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    upload_id: int,
    principal: Principal,
    body: BinaryIO | io.RawIOBase,
    *,
    media_type: str,
    default_algorithm: str,
    ingest: IngestSettings,
) -> None:
    """Write a streamed body into the upload's staging, hashing it as it is written.

    A file for ``application/octet-stream``, a directory for ``application/x-tar``. The
    bytes must be exactly the declared size, a directory must hold at least one file, and,
    when a checksum was declared at stage, match it: otherwise they are removed and the
    request is refused (400), so a lying client leaves nothing behind. A previous partial
    attempt is replaced. No transaction is open while the bytes arrive.
    """
    if media_type not in (FILE_MEDIA_TYPE, TAR_MEDIA_TYPE):
        raise UnsupportedMediaType(
            f"send {FILE_MEDIA_TYPE} for a file or {TAR_MEDIA_TYPE} for a directory, "
            f"not {media_type}"
        )
    with catalogue.session() as session:
        transfer, staging = _for_content(session, stores, upload_id, principal, ingest)
        declared_size, declared_checksum, name = transfer.size, transfer.checksum, transfer.name
        store_id = transfer.store_id
        transfer.updated_at = datetime.now(UTC)  # bytes are arriving: not idle
    expected = Checksum.parse(declared_checksum) if declared_checksum else None
    algorithm = expected.algorithm if expected else default_algorithm
    remove_if_present(staging.data_path)
    touching = _Touching(body, lambda: _touch(catalogue, upload_id), TOUCH_SECONDS)
    stream = io.BufferedReader(touching, CHUNK_SIZE)
    try:
        if media_type == TAR_MEDIA_TYPE:
            limits = EntryLimits(
                max_entries=ingest.max_entries_per_book,
                min_bytes_per_entry=ingest.min_bytes_per_entry,
                has_room=lambda: _has_room(catalogue, staging, store_id, declared_size, ingest),
            )
            received = receive_tar(stream, staging.data_path, algorithm, declared_size, limits)
            if received.size == 0 and is_empty_directory(staging.data_path):
                raise ReceiveError(str(EmptyBookError(repr(name))))
        else:
            received = receive_file(stream, staging.data_path, algorithm, declared_size)
        if received.size != declared_size:
            raise ReceiveError(
                f"size mismatch: declared {declared_size} bytes, received {received.size}"
            )
        if expected is not None and received.checksum != expected:
            raise ReceiveError(
                f"checksum mismatch: expected {expected}, received {received.checksum}"
            )
    except ReceiveError as error:
        _clean_up(catalogue, upload_id, staging)
        raise InvalidRequest(str(error)) from None
    except BaseException:
        _clean_up(catalogue, upload_id, staging)
        raise
    if not _touch(catalogue, upload_id):
        discard_quietly(staging, f"upload {upload_id} ended while its body arrived")
        raise Conflict(
            f"upload {upload_id} was cancelled or expired while its body arrived; nothing of "
            "it is kept"
        )


def _clean_up(catalogue: Catalogue, upload_id: int, staging: Staging) -> None:
    """After a refused or broken body: its data goes (the whole staging if cancelled)."""
    remove_if_present(staging.data_path)
    if not _touch(catalogue, upload_id):
        discard_quietly(staging, f"upload {upload_id} ended while its body arrived")


def _has_room(
    catalogue: Catalogue, staging: Staging, store_id: int, own: int, ingest: IngestSettings
) -> bool:
    """Whether the store still has room beyond its reserve and others' reservations."""
    with catalogue.session() as session:
        others = reserved_bytes(session, ingest, store_id=store_id) - own
    return staging.store.free_bytes() - max(0, others) > 0


def _touch(catalogue: Catalogue, upload_id: int) -> bool:
    """Bytes arrived for the upload: its idle time counts from now.

    Returns whether the upload is still ``initiated`` (not cancelled or expired meanwhile).
    Never raises: a catalogue hiccup here must not hide the body's own outcome (a 408, a
    400); the worst case is that the upload looks idle a little early.
    """
    try:
        with catalogue.session() as session:
            transfer = session.get(IncomingTransfer, upload_id)
            if transfer is None or transfer.status != TransferStatus.INITIATED:
                return False
            transfer.updated_at = datetime.now(UTC)
            return True
    except SQLAlchemyError as error:
        log.warning("could not record progress of upload %d: %s", upload_id, error)
        return True
