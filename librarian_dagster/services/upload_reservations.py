"""What initiated uploads hold (their declared bytes), who holds how much, and when it lapses.

An upload reserves its declared size from the moment it is staged, before a byte arrives, so
that two uploads cannot both count on the same free space. Left alone, that lets one user
reserve every store without sending anything, and a client killed mid-upload would hold its
reservation (and its partial data) forever. So:

- one user's reservations are capped, at ``max_reserved_fraction_per_user`` of the ingestable
  stores' free space and at ``max_reserved_bytes_per_user`` (507 names the cap), so another
  user can always still stage;
- an ``initiated`` upload that received no bytes for ``stage_expiry_hours`` (its row's
  ``updated_at`` is touched while an HTTP body arrives; bytes copied by the shared
  filesystem are seen by the sweep, from the staging data's newest mtime) no longer counts,
  and :func:`expire_idle_uploads` fails it with that reason, records an ``upload_expired``
  event naming its uploader (``event_alerts_sensor`` forwards it) and removes its
  staging;
- ``/ping`` counts the idle ones (:func:`idle_uploads`) until they expire.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import IncomingTransfer, User
from librarian_dagster.services.errors import InsufficientStorage
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import Staging, discard_quietly, fail, staging_of
from librarian_dagster.settings import IngestSettings
from librarian_dagster.states import Severity, TransferKind, TransferStatus
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.tree import newest_mtime_and_size

log = logging.getLogger(__name__)

# Initiated uploads expired per sweep (the next sweep takes the rest).
EXPIRE_BATCH = 200


def lapsed(transfer: IncomingTransfer, ingest: IngestSettings) -> bool:
    """An initiated upload idle past expiry: it reserves nothing and may not go on."""
    return (
        transfer.kind == TransferKind.UPLOAD
        and transfer.status == TransferStatus.INITIATED
        and transfer.updated_at < _live_cutoff(ingest)
    )


def _live_cutoff(ingest: IngestSettings, now: datetime | None = None) -> datetime:
    """Initiated uploads touched before this are idle past expiry: they reserve nothing."""
    return (now or datetime.now(UTC)) - timedelta(hours=ingest.stage_expiry_hours)


def reserved_bytes(
    session: Session,
    ingest: IngestSettings,
    *,
    store_id: int | None = None,
    uploader: str | None = None,
) -> int:
    """Declared bytes of live initiated transfers, in one store and/or of one uploader.

    Only uploads lapse (``stage_expiry_hours``); other kinds (inbox books, clone batches)
    reserve until they end.
    """
    statement = select(func.coalesce(func.sum(IncomingTransfer.size), 0)).where(
        IncomingTransfer.status == TransferStatus.INITIATED,
        or_(
            IncomingTransfer.kind != TransferKind.UPLOAD,
            IncomingTransfer.updated_at >= _live_cutoff(ingest),
        ),
    )
    if store_id is not None:
        statement = statement.where(IncomingTransfer.store_id == store_id)
    if uploader is not None:
        statement = statement.where(
            IncomingTransfer.uploader == uploader, IncomingTransfer.kind == TransferKind.UPLOAD
        )
    return int(session.scalar(statement) or 0)


def check_user_cap(
    session: Session, ingest: IngestSettings, uploader: str, size: int, free_bytes: Iterable[int]
) -> None:
    """Refuse (507) a new reservation that would put ``uploader`` over their cap.

    The uploader's account row is locked first (PostgreSQL; SQLite's writers are serialised
    already), so that parallel stages by one user cannot all pass the same check.
    """
    session.execute(select(User.id).where(User.name == uploader).with_for_update())
    held = reserved_bytes(session, ingest, uploader=uploader)
    by_fraction = int(ingest.max_reserved_fraction_per_user * sum(max(0, f) for f in free_bytes))
    cap, which = min(
        (
            by_fraction,
            f"max_reserved_fraction_per_user ({ingest.max_reserved_fraction_per_user:g}"
            " of the ingestable stores' free space)",
        ),
        (ingest.max_reserved_bytes_per_user, "max_reserved_bytes_per_user"),
    )
    if held + size > cap:
        raise InsufficientStorage(
            f"{uploader!r} already has {held} bytes reserved by uploads not yet committed; "
            f"{size} more would pass the cap of {cap} bytes ([ingest] {which}); commit or "
            "cancel some first"
        )


def idle_uploads(
    session: Session, store_id: int, idle_seconds: float, busy: Collection[int] = ()
) -> int:
    """Initiated uploads in a store with no bytes for ``idle_seconds`` (not receiving now)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=idle_seconds)
    statement = select(func.count()).where(
        IncomingTransfer.store_id == store_id,
        IncomingTransfer.status == TransferStatus.INITIATED,
        IncomingTransfer.kind == TransferKind.UPLOAD,
        IncomingTransfer.updated_at < cutoff,
    )
    if busy:
        statement = statement.where(IncomingTransfer.id.not_in(list(busy)))
    return int(session.scalar(statement) or 0)


def _last_written(staging: Staging) -> datetime | None:
    """When anything in the upload's staging data last changed (a shared-filesystem copy
    writes there without the API seeing it); None if there is none."""
    try:
        newest, _size = newest_mtime_and_size(staging.data_path)
    except OSError:
        return None
    return datetime.fromtimestamp(newest, UTC)


UPLOAD_EXPIRED_KIND = "upload_expired"


def expire_idle_uploads(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    ingest: IngestSettings,
    *,
    busy: Collection[int] = (),
    now: datetime | None = None,
) -> int:
    """Fail the initiated uploads idle past expiry and remove their staging; returns how many.

    ``busy`` are uploads whose body is arriving right now (never expired, however long they
    take). Each upload is failed in its own transaction, re-checked under a row lock, and its
    staging goes only after that committed: a crash in between leaves a failed upload with
    leftover staging, which ``/ping`` counts and the staging sweep removes.
    """
    cutoff = _live_cutoff(ingest, now)
    reason = f"expired: no bytes received for {ingest.stage_expiry_hours:g} hours"
    with catalogue.session() as session:
        statement = (
            select(IncomingTransfer.id)
            .where(
                IncomingTransfer.status == TransferStatus.INITIATED,
                IncomingTransfer.kind == TransferKind.UPLOAD,
                IncomingTransfer.updated_at < cutoff,
            )
            .order_by(IncomingTransfer.updated_at)
            .limit(EXPIRE_BATCH)
        )
        candidates = [i for i in session.scalars(statement) if i not in busy]
    expired = 0
    for upload_id in candidates:
        with catalogue.session() as session:
            transfer = session.get(IncomingTransfer, upload_id, with_for_update=True)
            if (
                transfer is None
                or transfer.status != TransferStatus.INITIATED
                or transfer.updated_at >= cutoff
            ):
                continue
            staging = staging_of(transfer, stores)
            written = _last_written(staging)
            if written is not None and written >= cutoff:
                transfer.updated_at = written  # bytes came by the shared filesystem: not idle
                continue
            fail(transfer, reason)
            # One event per expiry, named by uploader: the alert sensor forwards each new
            # one (grouped into one message per tick), which a grouped event would hide.
            begun = transfer.created_at
            record_event(
                session,
                Severity.WARNING,
                UPLOAD_EXPIRED_KIND,
                f"upload {upload_id} of {transfer.name} (begun {begun:%Y-%m-%d %H:%M} UTC) "
                f"failed: {reason}; the client may upload it again",
                subject=transfer.uploader,
            )
        discard_quietly(staging, f"expired upload {upload_id}")
        expired += 1
    if expired:
        log.info("expired %d idle uploads (%s)", expired, reason)
    return expired
