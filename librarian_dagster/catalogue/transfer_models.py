"""The transfer tables: bytes on their way into our stores or out to peers, and callbacks.

- ``IncomingTransfer``: an upload, inbox book, clone or drive book on its way into a store.
- ``TransferBatch`` and ``OutgoingTransfer``: books on their way to a peer, one mover task
  per batch.
- ``CallbackOutbox``: calls we owe a peer, kept until it has taken them.

Registered with the same metadata as ``models`` (which re-exports them); relationships name
the other tables' classes by string, so this module imports none of them at run time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from librarian_dagster.catalogue.columns import (
    CHECKSUM_LENGTH,
    NAME_LENGTH,
    AwareDateTime,
    Base,
    BigId,
    status_in_sql,
    str_enum,
    utcnow,
)
from librarian_dagster.states import (
    OUTGOING_PENDING,
    PENDING_STATUSES,
    BatchStatus,
    TransferKind,
    TransferStatus,
)

if TYPE_CHECKING:
    from librarian_dagster.catalogue.models import File, Librarian, Store

# The partial unique indexes below name the pending states in SQL.
PENDING_SQL = status_in_sql(PENDING_STATUSES)
OUTGOING_PENDING_SQL = status_in_sql(OUTGOING_PENDING)


class IncomingTransfer(Base):
    """Bytes on their way into one of our stores: an upload, a clone, a drive, an inbox book."""

    __tablename__ = "incoming_transfers"
    __table_args__ = (
        # The ingest sensor: pending transfers in one state ("staged", "verifying"), by id.
        Index(None, "status", "id"),
        Index(None, "name", "status"),
        # At most one pending transfer per name: two uploads can never race into the store.
        Index(
            "uq_incoming_transfers_pending_name",
            "name",
            unique=True,
            sqlite_where=text(PENDING_SQL),
            postgresql_where=text(PENDING_SQL),
        ),
        # A clone is staged once per sender's transfer: a repeated stage request finds it.
        Index(None, "librarian_id", "source_transfer_id"),
        # A drive's books, for its ingest's progress.
        Index(None, "drive_uuid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[TransferKind] = mapped_column(str_enum(TransferKind))
    status: Mapped[TransferStatus] = mapped_column(str_enum(TransferStatus))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(CHECKSUM_LENGTH), nullable=True)
    uploader: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    staging_id: Mapped[str] = mapped_column(String(64), unique=True)
    staging_path: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    # For clones: the sending peer, its outgoing transfer id (echoed in callbacks) and the
    # store it sent from (our remote instance there, once we hold the book).
    librarian_id: Mapped[int | None] = mapped_column(ForeignKey("librarians.id"), nullable=True)
    source_transfer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_store: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # For books from a drive: the drive, the origin's store it belongs to (the origin is
    # ``librarian_id``, ``source_store`` its store that holds the book), where it is mounted.
    drive_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    drive_store: Mapped[str | None] = mapped_column(String(64), nullable=True)
    drive_trip: Mapped[int | None] = mapped_column(Integer, nullable=True)
    drive_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    # Who verifies it: the Dagster run that claimed it, how often, when a run was requested.
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    launched_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    store: Mapped[Store] = relationship()


class TransferBatch(Base):
    """One mover task (e.g. one Globus task) carrying many outgoing transfers."""

    __tablename__ = "transfer_batches"
    __table_args__ = (
        Index(None, "status", "id"),
        Index(None, "librarian_id", "status"),
        Index(None, "mover", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    mover: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Chosen before the task is submitted: submitting again with it cannot start a second
    # task (Globus deduplicates submission ids; so does LocalMover).
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The peer's collection (Globus) from its answer to stage; None for the local mover.
    endpoint: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[BatchStatus] = mapped_column(str_enum(BatchStatus))
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_moved: Mapped[int] = mapped_column(BigInteger, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # When a clone_batch run was last asked for, and when the next may be (after a failure).
    run_requested_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # When the mover was last asked how the task is doing (polled oldest first).
    polled_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # When the task last moved bytes (or was submitted): no progress for long = stuck.
    progress_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    transfers: Mapped[list[OutgoingTransfer]] = relationship(back_populates="batch")
    librarian: Mapped[Librarian] = relationship()


class OutgoingTransfer(Base):
    """One file on its way to a peer: one row from the first try to the peer's answer.

    A book the mover did not deliver, or that the peer refused, goes back to ``initiated``
    without a batch, ``next_attempt_at`` later, and is sent again in a later batch, up to
    ``[transfer] max_attempts``; ``created_at`` stays the first try's.
    """

    __tablename__ = "outgoing_transfers"
    __table_args__ = (
        Index(None, "librarian_id", "status"),
        # Books staged at a peer and never confirmed (reconcile): by state and age.
        Index(None, "status", "updated_at"),
        Index(None, "file_id", "librarian_id"),
        Index(None, "batch_id"),
        # At most one book in flight per peer: a repeated tick or run never sends it twice.
        Index(
            "uq_outgoing_transfers_pending_file",
            "file_id",
            "librarian_id",
            unique=True,
            sqlite_where=text(OUTGOING_PENDING_SQL),
            postgresql_where=text(OUTGOING_PENDING_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("transfer_batches.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[TransferStatus] = mapped_column(str_enum(TransferStatus))
    # The peer's incoming transfer id and staging path, from its batch-stage answer (the
    # path as the batch's mover addresses it).
    remote_transfer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    remote_staging_path: Mapped[str | None] = mapped_column(String(NAME_LENGTH * 2), nullable=True)
    # Our copy the mover reads (an instance's path), chosen when the batch is submitted.
    source_path: Mapped[str | None] = mapped_column(String(NAME_LENGTH * 2), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    batch: Mapped[TransferBatch | None] = relationship(back_populates="transfers")
    file: Mapped[File] = relationship()
    librarian: Mapped[Librarian] = relationship()


class CallbackOutbox(Base):
    """A call we owe a peer (e.g. "clone complete"); retried with back-off until delivered."""

    __tablename__ = "callback_outbox"
    __table_args__ = (Index(None, "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    route: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
