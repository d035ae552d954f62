"""The catalogue: SQLAlchemy 2 typed models, the source of truth of a librarian.

Every table that a sensor or a list route queries carries the index that query needs, named
here so migrations and the schema-equality test see the same thing. Structured values are
JSON columns, never pickles. States are short strings validated by ``StrEnum`` types so the
catalogue stays readable from ``psql`` and Grafana. The tables of transfers (bytes on their
way in or out, and the callbacks we owe peers) are in ``transfer_models``, re-exported here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
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
    UNRESOLVED_CORRUPTION,
    CorruptionReason,
    CorruptionStatus,
    DriveState,
    Severity,
    StoreKind,
    UserLevel,
)

# The partial unique index that keeps a single open corrupt-copy record per instance.
UNRESOLVED_SQL = status_in_sql(UNRESOLVED_CORRUPTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    level: Mapped[UserLevel] = mapped_column(str_enum(UserLevel))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class Librarian(Base):
    """A peer librarian. Its password for our account on it is encrypted with our secret key.

    Its account on us has the same name (level ``callback``): that is how a callback is
    known to come from it.
    """

    __tablename__ = "librarians"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(512))
    remote_user: Mapped[str] = mapped_column(String(64))
    encrypted_password: Mapped[bytes] = mapped_column(LargeBinary)
    # The byte mover that carries books to it ("local", "globus"), and its Globus collection
    # as its first stage answer named it: a later answer naming another is refused.
    mover: Mapped[str] = mapped_column(String(32), server_default="local")
    collection_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    transfers_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # The last call to it that failed, and why; cleared by the next one that succeeds.
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # Clone sensor high-water mark: files with id <= this have been considered for this peer.
    clone_high_water_file_id: Mapped[int] = mapped_column(BigId, default=0)


class Store(Base):
    """A store declared in the config file and synced here at start."""

    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[StoreKind] = mapped_column(str_enum(StoreKind))
    root: Mapped[str] = mapped_column(String(1024))
    ingestable: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # False when the config no longer declares it: instances stay recorded, nothing new goes in.
    declared: Mapped[bool] = mapped_column(Boolean, default=True)
    # Sneaker stores only: where the drive is in its round trip, and which drive it is.
    state: Mapped[DriveState | None] = mapped_column(str_enum(DriveState), nullable=True)
    drive_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Which round trip the drive is on (1, then one more per wipe): manifests, ingests at
    # the destination and the fill sensor's run keys tell trips of one drive apart by it.
    drive_trip: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Fills look only above this book id (``services.sneaker``); wiping sets it back to 0.
    fill_high_water_file_id: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    # Rolling stores only: the next cleanup run looks after this book id (0: from the start).
    rolling_after_file_id: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)


class File(Base):
    """An immutable named thing (a file or a whole directory: a book)."""

    __tablename__ = "files"
    __table_args__ = (Index(None, "created_at"), Index(None, "uploader"), Index(None, "source"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(CHECKSUM_LENGTH))
    is_directory: Mapped[bool] = mapped_column(Boolean, default=False)
    uploader: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))  # the librarian where it was first ingested
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)

    instances: Mapped[list[Instance]] = relationship(back_populates="file")
    remote_instances: Mapped[list[RemoteInstance]] = relationship(back_populates="file")


class Instance(Base):
    """A copy of a file in one of our own stores."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("file_id", "store_id"),
        Index(None, "store_id", "file_id"),
        Index(None, "verified_at", "id"),  # the integrity job's slice, least recent first
        Index(None, "store_id", "available", "file_id"),  # a rolling store's selection
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    path: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    # Set when the bytes were last found to match (ingest, a verification); never NULL for
    # copies made since migration 0006, which the integrity job's order relies on.
    verified_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # A rolling store deleted the bytes (enough verified copies elsewhere): the row stays,
    # out of service, saying when and why.
    deleted_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    deleted_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    file: Mapped[File] = relationship(back_populates="instances")
    store: Mapped[Store] = relationship()


class RemoteInstance(Base):
    """A copy that a peer librarian told us it holds (unique per file x peer x peer store)."""

    __tablename__ = "remote_instances"
    __table_args__ = (
        UniqueConstraint("file_id", "librarian_id", "store_name"),
        Index(None, "librarian_id", "file_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    store_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    file: Mapped[File] = relationship(back_populates="remote_instances")
    librarian: Mapped[Librarian] = relationship()


class CorruptFile(Base):
    """A copy that failed re-verification: its bytes differ, it is gone, or it cannot be read.

    The record stays open (``UNRESOLVED_CORRUPTION``) until the copy verifies again or an
    operator dismisses it with a note; at most one open record per instance.
    """

    __tablename__ = "corrupt_files"
    __table_args__ = (
        Index(None, "status", "id"),
        Index(None, "file_id"),
        Index(
            "uq_corrupt_files_open_instance",
            "instance_id",
            unique=True,
            sqlite_where=text(UNRESOLVED_SQL),
            postgresql_where=text(UNRESOLVED_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", ondelete="SET NULL"), nullable=True
    )
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    reason: Mapped[CorruptionReason] = mapped_column(
        str_enum(CorruptionReason), server_default=CorruptionReason.MISMATCH.value
    )
    expected_checksum: Mapped[str] = mapped_column(String(CHECKSUM_LENGTH))
    actual_checksum: Mapped[str | None] = mapped_column(String(CHECKSUM_LENGTH), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[CorruptionStatus] = mapped_column(str_enum(CorruptionStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detected_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    # When a peer was last asked to re-send it (the repair's clock; a re-read moves updated_at).
    requested_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # Who closed it: an account name for a dismissal, "verified" when a re-read passed.
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    file: Mapped[File] = relationship()
    store: Mapped[Store] = relationship()


class Event(Base):
    """The operator-facing log: what went wrong (or needs a human), until someone resolves it.

    One open event per cause when grouped (``services.events.raise_event``): the same kind
    and subject raised again bump ``count`` and ``last_at`` instead of adding a row.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "resolved", "id"),
        Index(None, "created_at"),
        Index(None, "kind", "subject", "resolved"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    severity: Mapped[Severity] = mapped_column(str_enum(Severity))
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


# The transfer tables refer to the ones above by name; importing them here registers them
# with the same metadata and lets everyone import every model from this module.
from librarian_dagster.catalogue.transfer_models import (  # noqa: E402
    CallbackOutbox,
    IncomingTransfer,
    OutgoingTransfer,
    TransferBatch,
)

__all__ = [
    "CallbackOutbox",
    "CorruptFile",
    "Event",
    "File",
    "IncomingTransfer",
    "Instance",
    "Librarian",
    "OutgoingTransfer",
    "RemoteInstance",
    "Store",
    "TransferBatch",
    "User",
]
