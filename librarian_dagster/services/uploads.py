"""Uploads: stage a name, commit its bytes for ingest, report, cancel.

The life of an upload (an incoming transfer of kind ``upload``, see ``services.incoming``):
``initiated`` (staging dir made) → ``staged`` (client committed; bytes and checksum known) →
``verifying`` (an ingest run claimed it) → ``stored`` | ``failed``; or ``cancelled``.

Every function checks before it writes: a refused request leaves the catalogue and the stores
as they were. Uploads belong to their uploader; other non-admin users get 404, not 403, so
upload ids leak nothing. Most take the caller's session; ``cancel_upload`` takes the
``Catalogue``: a cancelled upload's data goes only after the cancellation has committed.
Bytes streamed over HTTP are received by ``services.upload_content``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Store
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    TooLarge,
)
from librarian_dagster.services.events import record_event
from librarian_dagster.services.files import is_catalogued
from librarian_dagster.services.incoming import (
    AfterCommit,
    Staging,
    discard,
    discard_quietly,
    pending_for_name,
    stage_transfer,
    staging_of,
)
from librarian_dagster.services.upload_reservations import check_user_cap, lapsed, reserved_bytes
from librarian_dagster.settings import IngestSettings
from librarian_dagster.states import Severity, StoreKind, TransferKind, TransferStatus, UserLevel
from librarian_dagster.storage.checksums import (
    Checksum,
    ChecksumError,
    EmptyBookError,
    refuse_empty_directory,
)
from librarian_dagster.storage.errors import (
    PathEscapeError,
    StagingNotFoundError,
    StoreFullError,
)
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.names import InvalidNameError, normalise_name, validate_new_name
from librarian_dagster.storage.tree import tree_size

log = logging.getLogger(__name__)


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
        return validate_new_name(normalise_name(name))
    except InvalidNameError as error:
        raise InvalidRequest(f"invalid name: {error}") from None


def choose_store(
    session: Session,
    stores: dict[str, LocalStore],
    ingest: IngestSettings,
    size: int,
    uploader: str | None,
) -> tuple[Store, LocalStore]:
    """The first enabled, ingestable local store with room for ``size`` bytes (else 507).

    Room is the store's free space less what live transfers reserved; an uploader's own
    reservations are capped (``upload_reservations.check_user_cap``); ``uploader=None``
    (a peer's clone batch, which is not one user's) skips that cap.
    """
    rows = session.scalars(
        select(Store)
        .where(Store.enabled, Store.ingestable, Store.declared, Store.kind == StoreKind.LOCAL)
        .order_by(Store.id)
    ).all()
    candidates = [(row, stores[row.name]) for row in rows if row.name in stores]
    if not candidates:
        raise InsufficientStorage("no enabled ingestable store is configured")
    free_now = {row.id: store.free_bytes() for row, store in candidates}
    if uploader is not None:
        check_user_cap(session, ingest, uploader, size, free_now.values())
    best_free = 0
    for row, store in candidates:
        free = free_now[row.id] - reserved_bytes(session, ingest, store_id=row.id)
        if size <= free:
            return row, store
        best_free = max(best_free, free)
    raise InsufficientStorage(
        f"no ingestable store has room for {size} bytes (most free: {max(best_free, 0)} bytes)"
    )


def owned_upload(
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


def stage_upload(
    session: Session,
    stores: dict[str, LocalStore],
    *,
    name: str,
    size: int,
    checksum: str | None,
    principal: Principal,
    source: str,
    ingest: IngestSettings,
) -> tuple[IncomingTransfer, bool]:
    """Create (or resume) an upload. Returns the transfer and whether it is new."""
    name = check_name(name)
    checksum = parse_checksum(checksum)
    if size < 0:
        raise InvalidRequest("size must not be negative")
    if size > ingest.max_upload_bytes:
        raise TooLarge(
            f"{size} bytes is over the upload limit of {ingest.max_upload_bytes} bytes "
            "([ingest] max_upload_bytes)"
        )
    if is_catalogued(session, name):
        raise Conflict(f"{name!r} is already catalogued; names are immutable")
    pending = pending_for_name(session, name)
    if pending is not None:
        if pending.uploader != principal.name or pending.kind != TransferKind.UPLOAD:
            raise Conflict(f"{name!r} is already being uploaded by someone else")
        if pending.size != size or (checksum and pending.checksum and checksum != pending.checksum):
            raise Conflict(
                f"{name!r} has a pending upload ({pending.id}) with a different size or checksum;"
                " cancel it first"
            )
        refuse_lapsed(pending, ingest)
        pending.updated_at = datetime.now(UTC)  # resumed: not idle
        return pending, False
    row, store = choose_store(session, stores, ingest, size, principal.name)
    try:
        transfer = stage_transfer(
            session,
            row,
            store,
            kind=TransferKind.UPLOAD,
            name=name,
            size=size,
            checksum=checksum,
            uploader=principal.name,
            source=source,
        )
    except StoreFullError as error:
        raise InsufficientStorage(str(error)) from None
    return transfer, True


def refuse_lapsed(transfer: IncomingTransfer, ingest: IngestSettings) -> None:
    """An upload idle past expiry no longer reserves its space: it may not go on (409)."""
    if lapsed(transfer, ingest):
        raise Conflict(
            f"upload {transfer.id} expired (no bytes for {ingest.stage_expiry_hours:g} hours); "
            "cancel it and stage again"
        )


def require_staging(staging: Staging, transfer: IncomingTransfer, gone: str) -> None:
    """The upload's staging directory must exist and be a real directory (else 409)."""
    try:
        staging.store.staged(staging.staging_id, transfer.name)
    except StagingNotFoundError:
        raise Conflict(f"the staging directory of upload {transfer.id} {gone}") from None
    except PathEscapeError:
        raise Conflict(
            f"the staging directory of upload {transfer.id} is not a real directory (a "
            "symlink?); nothing was read through it. Cancel the upload and upload again"
        ) from None


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
    transfer = owned_upload(session, upload_id, principal, for_update=True)
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
    require_staging(staging, transfer, "is gone; cancel it and upload again")
    size = tree_size(staging.data_path)
    if size is None:
        raise InvalidRequest(f"nothing is staged at {staging.data_path}")
    if size != transfer.size:
        raise InvalidRequest(f"size mismatch: declared {transfer.size} bytes, staged {size}")
    if size == 0:  # only then can it be an empty directory
        refuse_empty_book(staging.data_path, transfer.name)
    transfer.checksum = checksum
    transfer.status = TransferStatus.STAGED
    if launching:
        transfer.launched_at = datetime.now(UTC)
    session.flush()
    return transfer


def refuse_empty_book(data_path: Path, name: str) -> None:
    """An empty directory is not a book (400): almost always a producer's bug."""
    try:
        refuse_empty_directory(data_path, repr(name))
    except EmptyBookError as error:
        raise InvalidRequest(str(error)) from None


def get_upload(session: Session, upload_id: int, principal: Principal) -> IncomingTransfer:
    return owned_upload(session, upload_id, principal)


def get_uploads(
    session: Session, upload_ids: Sequence[int], principal: Principal
) -> list[IncomingTransfer]:
    """Several uploads at once (for clients that wait on many); unknown ids are 404.

    One query for all of them, in the order asked.
    """
    wanted = list(dict.fromkeys(upload_ids))
    found = {
        transfer.id: transfer
        for transfer in session.scalars(
            select(IncomingTransfer).where(
                IncomingTransfer.id.in_(wanted), IncomingTransfer.kind == TransferKind.UPLOAD
            )
        )
        if principal.level == UserLevel.ADMIN or transfer.uploader == principal.name
    }
    for upload_id in upload_ids:
        if upload_id not in found:
            raise NotFound(f"no upload {upload_id}")
    return [found[upload_id] for upload_id in upload_ids]


def cancel_upload(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    upload_id: int,
    principal: Principal,
    *,
    leave_removal: Callable[[int, Callable[[], None]], bool] | None = None,
) -> None:
    """Cancel an upload that no run has claimed yet, and remove its staged data.

    The data goes only *after* the cancellation committed: if the commit fails, it is still
    there for the upload to go on. ``leave_removal(upload_id, remove)`` (the API's
    ``UploadSlots.leave_to_body``) hands the removal to a body's writer if one is arriving,
    to do once the body has ended, and says whether it did: two removers of one growing
    tree trip over each other, and a writer that checked the status just before the
    cancellation committed would otherwise leave the data behind.
    """
    with catalogue.session() as session:
        transfer = owned_upload(session, upload_id, principal, for_update=True)
        if transfer.status not in (TransferStatus.INITIATED, TransferStatus.STAGED):
            raise Conflict(f"upload {upload_id} is {transfer.status.value}; it cannot be cancelled")
        transfer.status = TransferStatus.CANCELLED
        transfer.failure_reason = f"cancelled by {principal.name}"
        transfer.completed_at = datetime.now(UTC)
        session.flush()
        staging = staging_of(transfer, stores)

    def remove() -> None:
        discard_quietly(staging, f"cancelled upload {upload_id}")

    if leave_removal is None or not leave_removal(upload_id, remove):
        remove()


class UploadHooks:
    """What ingest does at the end of an upload (``incoming.KindHooks``).

    A refused upload's bytes are the uploader's bad copy (the original is on their side):
    they are removed, after the failure has committed (a big tree takes a while, and the
    write lock must not wait for it). If that removal fails or never happens (a crash), the
    failure stands and the data is a leftover in staging (``/ping`` counts those); a failed
    removal also leaves an event saying where.
    """

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None:
        """Nothing more to do: the client sees ``stored`` when it polls."""

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit:
        upload_id, name = transfer.id, transfer.name

        def remove(catalogue: Catalogue) -> None:
            try:
                discard(staging)
            except OSError as error:
                log.warning("could not remove the staged data of upload %d: %s", upload_id, error)
                with catalogue.session() as session:
                    record_event(
                        session,
                        Severity.WARNING,
                        "staging_not_removed",
                        f"the refused upload's data at {staging.data_path} could not be "
                        f"removed: {error.strerror or error}",
                        subject=name,
                        details={"transfer_id": upload_id},
                    )

        return remove
