"""Uploads: stage a name, receive its bytes, commit it for ingest, report, cancel.

The life of an upload (an ``IncomingTransfer`` of kind ``upload``):
``initiated`` (staging dir made) → ``staged`` (client committed; bytes and checksum known) →
``verifying`` (an ingest run claimed it) → ``stored`` | ``failed``; or ``cancelled``.

Every function checks before it writes: a refused request leaves the catalogue and the stores
as they were. Uploads belong to their uploader; other non-admin users get 404, not 403, so
upload ids leak nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import (
    PENDING_STATUSES,
    File,
    IncomingTransfer,
    Store,
    TransferKind,
    TransferStatus,
    UserLevel,
)
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
)
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StagingNotFoundError, StoreFullError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.names import InvalidNameError, validate_name


@dataclass(frozen=True)
class Staging:
    """Where an upload's bytes go: the store, its staging directory and the data path."""

    store: LocalStore
    staging_id: str
    data_path: Path


def parse_checksum(text: str | None) -> str | None:
    """Normalise a client checksum to ``alg:hex`` or refuse it (400)."""
    if text is None:
        return None
    try:
        return str(Checksum.parse(text))
    except ChecksumError as error:
        raise InvalidRequest(f"invalid checksum: {error}") from None


def check_name(name: str) -> str:
    try:
        return validate_name(name)
    except InvalidNameError as error:
        raise InvalidRequest(f"invalid name: {error}") from None


def staged_size(path: Path) -> int | None:
    """Bytes of a staged file or tree (regular files only); None when nothing is there."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size
    total = 0
    pending = [str(path)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def _pending_initiated_bytes(session: Session, store_id: int) -> int:
    """Bytes promised to uploads whose data may not be in staging yet."""
    total = session.scalar(
        select(func.coalesce(func.sum(IncomingTransfer.size), 0)).where(
            IncomingTransfer.store_id == store_id,
            IncomingTransfer.status == TransferStatus.INITIATED,
        )
    )
    return int(total or 0)


def _choose_store(
    session: Session, stores: dict[str, LocalStore], size: int
) -> tuple[Store, LocalStore]:
    """The first enabled, ingestable local store with room for ``size`` bytes (else 507)."""
    rows = session.scalars(
        select(Store)
        .where(Store.enabled, Store.ingestable, Store.declared, Store.kind == "local")
        .order_by(Store.id)
    ).all()
    best_free = 0
    for row in rows:
        store = stores.get(row.name)
        if store is None:
            continue
        free = store.free_bytes() - _pending_initiated_bytes(session, row.id)
        if size <= free:
            return row, store
        best_free = max(best_free, free)
    if not rows:
        raise InsufficientStorage("no enabled ingestable store is configured")
    raise InsufficientStorage(
        f"no ingestable store has room for {size} bytes (most free: {max(best_free, 0)} bytes)"
    )


def _owned(
    session: Session, upload_id: int, principal: Principal, *, for_update: bool = False
) -> IncomingTransfer:
    # Row-locked when we are about to change it, so a concurrent ingest claim or commit
    # cannot be overwritten (PostgreSQL; SQLite serialises writers with BEGIN IMMEDIATE).
    transfer = session.get(IncomingTransfer, upload_id, with_for_update=for_update)
    if (
        transfer is None
        or transfer.kind != TransferKind.UPLOAD
        or (principal.level != UserLevel.ADMIN and transfer.uploader != principal.name)
    ):
        raise NotFound(f"no upload {upload_id}")
    return transfer


def _pending_for_name(session: Session, name: str) -> IncomingTransfer | None:
    return session.scalar(
        select(IncomingTransfer).where(
            IncomingTransfer.name == name, IncomingTransfer.status.in_(PENDING_STATUSES)
        )
    )


def stage_upload(
    session: Session,
    stores: dict[str, LocalStore],
    *,
    name: str,
    size: int,
    checksum: str | None,
    principal: Principal,
    source: str,
    max_size: int | None = None,
) -> tuple[IncomingTransfer, bool]:
    """Create (or resume) an upload. Returns the transfer and whether it is new."""
    name = check_name(name)
    checksum = parse_checksum(checksum)
    if size < 0:
        raise InvalidRequest("size must not be negative")
    if max_size is not None and size > max_size:
        raise InsufficientStorage(f"{size} bytes is over the upload limit of {max_size} bytes")
    if session.scalar(select(File.id).where(File.name == name)) is not None:
        raise Conflict(f"{name!r} is already catalogued; names are immutable")
    pending = _pending_for_name(session, name)
    if pending is not None:
        if pending.uploader != principal.name or pending.kind != TransferKind.UPLOAD:
            raise Conflict(f"{name!r} is already being uploaded by someone else")
        if pending.size != size or (checksum and pending.checksum and checksum != pending.checksum):
            raise Conflict(
                f"{name!r} has a pending upload ({pending.id}) with a different size or checksum;"
                " cancel it first"
            )
        return pending, False
    row, store = _choose_store(session, stores, size)
    try:
        staged = store.stage(name, size)
    except StoreFullError as error:
        raise InsufficientStorage(str(error)) from None
    transfer = IncomingTransfer(
        kind=TransferKind.UPLOAD,
        status=TransferStatus.INITIATED,
        name=name,
        size=size,
        checksum=checksum,
        uploader=principal.name,
        source=source,
        store_id=row.id,
        staging_id=staged.staging_id,
        staging_path=str(staged.data_path),
    )
    session.add(transfer)
    try:
        session.flush()
    except Exception:
        store.discard_staging(staged.staging_id)
        raise
    return transfer, True


def staging_of(transfer: IncomingTransfer, stores: dict[str, LocalStore]) -> Staging:
    store = stores[transfer.store.name]
    return Staging(store, transfer.staging_id, Path(transfer.staging_path))


def upload_for_content(
    session: Session, stores: dict[str, LocalStore], upload_id: int, principal: Principal
) -> tuple[IncomingTransfer, Staging]:
    """The upload whose bytes are about to be received (it must still be ``initiated``)."""
    transfer = _owned(session, upload_id, principal)
    if transfer.status != TransferStatus.INITIATED:
        raise Conflict(f"upload {upload_id} is {transfer.status.value}; it takes no more bytes")
    staging = staging_of(transfer, stores)
    try:
        staging.store.staged(staging.staging_id, transfer.name)
    except StagingNotFoundError:
        raise Conflict(f"the staging directory of upload {upload_id} is gone") from None
    return transfer, staging


def commit_upload(
    session: Session,
    stores: dict[str, LocalStore],
    upload_id: int,
    checksum: str | None,
    principal: Principal,
    *,
    launching: bool = False,
) -> IncomingTransfer:
    """Mark an upload's bytes as complete; ingest picks it up from here (202).

    ``launching`` says the caller is about to request the ingest run itself: the transfer is
    marked as requested in the same transaction, so the sensor does not ask a second time.
    """
    transfer = _owned(session, upload_id, principal, for_update=True)
    if transfer.status != TransferStatus.INITIATED:
        raise Conflict(f"upload {upload_id} is already {transfer.status.value}")
    checksum = parse_checksum(checksum)
    if checksum and transfer.checksum and checksum != transfer.checksum:
        raise InvalidRequest(
            f"checksum {checksum} differs from the one given when staging ({transfer.checksum})"
        )
    checksum = checksum or transfer.checksum
    if checksum is None:
        raise InvalidRequest("a checksum is required, at stage or at commit")
    staging = staging_of(transfer, stores)
    try:
        staging.store.staged(staging.staging_id, transfer.name)
    except StagingNotFoundError:
        raise Conflict(
            f"the staging directory of upload {upload_id} is gone; cancel it and upload again"
        ) from None
    size = staged_size(staging.data_path)
    if size is None:
        raise InvalidRequest(f"nothing is staged at {staging.data_path}")
    if size != transfer.size:
        raise InvalidRequest(f"size mismatch: declared {transfer.size} bytes, staged {size}")
    transfer.checksum = checksum
    transfer.status = TransferStatus.STAGED
    if launching:
        transfer.launched_at = datetime.now(UTC)
    session.flush()
    return transfer


def get_upload(session: Session, upload_id: int, principal: Principal) -> IncomingTransfer:
    return _owned(session, upload_id, principal)


def get_uploads(
    session: Session, upload_ids: Sequence[int], principal: Principal
) -> list[IncomingTransfer]:
    """Several uploads at once (for clients that wait on many); unknown ids are 404."""
    return [_owned(session, upload_id, principal) for upload_id in upload_ids]


def fail_transfer(transfer: IncomingTransfer, reason: str) -> None:
    transfer.status = TransferStatus.FAILED
    transfer.failure_reason = reason
    transfer.completed_at = datetime.now(UTC)


def cancel_upload(
    session: Session, stores: dict[str, LocalStore], upload_id: int, principal: Principal
) -> Staging:
    """Cancel an upload that no run has claimed yet.

    Returns its staging, which the caller removes with ``discard`` *after* the transaction
    committed: if the commit fails, the data is still there for the upload to go on.
    """
    transfer = _owned(session, upload_id, principal, for_update=True)
    if transfer.status not in (TransferStatus.INITIATED, TransferStatus.STAGED):
        raise Conflict(f"upload {upload_id} is {transfer.status.value}; it cannot be cancelled")
    transfer.status = TransferStatus.CANCELLED
    transfer.failure_reason = f"cancelled by {principal.name}"
    transfer.completed_at = datetime.now(UTC)
    session.flush()
    return staging_of(transfer, stores)


def discard(staging: Staging) -> None:
    """Remove a staging directory and its data; a missing one is already discarded."""
    with contextlib.suppress(StagingNotFoundError):
        staging.store.discard_staging(staging.staging_id)
