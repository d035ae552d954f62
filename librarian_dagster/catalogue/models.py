"""The catalogue: SQLAlchemy 2 typed models, the source of truth of a librarian.

Every table that a sensor or a list route queries carries the index that query needs, named
here so migrations and the schema-equality test see the same thing. Structured values are
JSON columns, never pickles. States are short strings validated by ``StrEnum`` types so the
catalogue stays readable from ``psql`` and Grafana.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from librarian_dagster.states import (
    PENDING_STATUSES,
    UNRESOLVED_CORRUPTION,
    CorruptionReason,
    CorruptionStatus,
    Severity,
    StoreKind,
    TransferKind,
    TransferStatus,
    UserLevel,
)

NAME_LENGTH = 1024
CHECKSUM_LENGTH = 160

# Portable 64-bit auto-increment keys: SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class AwareDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes, whatever the backend keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue; use UTC-aware datetimes")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


# The partial unique index below must name the pending states in SQL.
PENDING_SQL = f"status IN ({', '.join(repr(status.value) for status in PENDING_STATUSES)})"
# ... and so must the one that keeps a single open corrupt-copy record per instance.
UNRESOLVED_SQL = f"status IN ({', '.join(repr(status.value) for status in UNRESOLVED_CORRUPTION)})"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    level: Mapped[UserLevel] = mapped_column(_enum(UserLevel))
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)


class Librarian(Base):
    """A peer librarian. Its password for our account on it is encrypted with our secret key."""

    __tablename__ = "librarians"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(512))
    remote_user: Mapped[str] = mapped_column(String(64))
    encrypted_password: Mapped[bytes] = mapped_column(LargeBinary)
    transfers_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # Clone sensor high-water mark: files with id <= this have been considered for this peer.
    clone_high_water_file_id: Mapped[int] = mapped_column(BigId, default=0)


class Store(Base):
    """A store declared in the config file and synced here at start."""

    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[StoreKind] = mapped_column(_enum(StoreKind))
    root: Mapped[str] = mapped_column(String(1024))
    ingestable: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # False when the config no longer declares it: instances stay recorded, nothing new goes in.
    declared: Mapped[bool] = mapped_column(Boolean, default=True)
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
    __table_args__ = (UniqueConstraint("file_id", "store_id"), Index(None, "store_id", "file_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    path: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

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
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[TransferKind] = mapped_column(_enum(TransferKind))
    status: Mapped[TransferStatus] = mapped_column(_enum(TransferStatus))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(CHECKSUM_LENGTH), nullable=True)
    uploader: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    staging_id: Mapped[str] = mapped_column(String(64), unique=True)
    staging_path: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    # For clones: the sender's outgoing transfer id, echoed in callbacks.
    source_transfer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
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
    __table_args__ = (Index(None, "status", "id"), Index(None, "librarian_id", "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    mover: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[TransferStatus] = mapped_column(_enum(TransferStatus))
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    transfers: Mapped[list[OutgoingTransfer]] = relationship(back_populates="batch")


class OutgoingTransfer(Base):
    """One file on its way to a peer."""

    __tablename__ = "outgoing_transfers"
    __table_args__ = (
        Index(None, "librarian_id", "status"),
        Index(None, "file_id", "librarian_id"),
        Index(None, "batch_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    librarian_id: Mapped[int] = mapped_column(ForeignKey("librarians.id"))
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("transfer_batches.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[TransferStatus] = mapped_column(_enum(TransferStatus))
    # The peer's incoming transfer id and staging path, from its batch-stage answer.
    remote_transfer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    remote_staging_path: Mapped[str | None] = mapped_column(String(NAME_LENGTH * 2), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)

    batch: Mapped[TransferBatch | None] = relationship(back_populates="transfers")


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
        _enum(CorruptionReason), server_default=CorruptionReason.MISMATCH.value
    )
    expected_checksum: Mapped[str] = mapped_column(String(CHECKSUM_LENGTH))
    actual_checksum: Mapped[str | None] = mapped_column(String(CHECKSUM_LENGTH), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[CorruptionStatus] = mapped_column(_enum(CorruptionStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detected_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)
    # Who closed it: an account name for a dismissal, "verified" when a re-read passed.
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    file: Mapped[File] = relationship()
    store: Mapped[Store] = relationship()


class Event(Base):
    """The operator-facing log: what went wrong (or needs a human), until someone resolves it."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "resolved", "id"), Index(None, "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    severity: Mapped[Severity] = mapped_column(_enum(Severity))
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(AwareDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(AwareDateTime(), nullable=True)


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
