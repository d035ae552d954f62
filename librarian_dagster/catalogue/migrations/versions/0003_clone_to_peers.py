"""clone to peers: movers per peer, peer health, batch submission, re-sends, one book in flight

- ``librarians``: ``mover`` (existing peers: ``local``), ``collection_id`` (pinned at the
  first stage answer), ``last_error``, ``last_error_at``;
- ``incoming_transfers``: the sending peer (``librarian_id``) and its store (``source_store``),
  indexed with ``source_transfer_id`` so a repeated stage request finds its transfer;
- ``transfer_batches``: ``submission_id``, ``endpoint``, ``bytes_moved``, run and poll times;
  its status now counts batch states (``initiated`` … ``succeeded``);
- ``outgoing_transfers``: ``source_path``, ``attempts``, ``next_attempt_at``, an index for
  books never confirmed (``status``, ``updated_at``), and at most one pending transfer per
  book and peer.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTGOING_PENDING_SQL = "status IN ('initiated', 'ongoing', 'staged')"


def _batch_status() -> sa.Enum:
    return sa.Enum(
        "initiated",
        "staged",
        "submitting",
        "ongoing",
        "succeeded",
        "failed",
        "cancelled",
        name="batchstatus",
        native_enum=False,
        length=24,
    )


def _transfer_status() -> sa.Enum:
    return sa.Enum(
        "initiated",
        "staged",
        "verifying",
        "ongoing",
        "stored",
        "failed",
        "cancelled",
        name="transferstatus",
        native_enum=False,
        length=24,
    )


def upgrade() -> None:
    with op.batch_alter_table("librarians", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mover", sa.String(length=32), server_default="local", nullable=False)
        )
        batch_op.add_column(sa.Column("collection_id", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("incoming_transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("librarian_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("source_store", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_incoming_transfers_librarian_id_librarians"),
            "librarians",
            ["librarian_id"],
            ["id"],
        )
        batch_op.create_index(
            batch_op.f("ix_incoming_transfers_librarian_id_source_transfer_id"),
            ["librarian_id", "source_transfer_id"],
            unique=False,
        )

    # No batch was ever made before this revision (the clone flow did not exist): the old
    # states need no translation.
    with op.batch_alter_table("transfer_batches", schema=None) as batch_op:
        batch_op.alter_column(
            "status", existing_type=_transfer_status(), type_=_batch_status(), nullable=False
        )
        batch_op.add_column(sa.Column("submission_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("endpoint", sa.String(length=256), nullable=True))
        batch_op.add_column(
            sa.Column("bytes_moved", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("run_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_transfer_batches_mover_status"), ["mover", "status"], unique=False
        )

    with op.batch_alter_table("outgoing_transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_path", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_outgoing_transfers_status_updated_at"),
            ["status", "updated_at"],
            unique=False,
        )
        batch_op.create_index(
            "uq_outgoing_transfers_pending_file",
            ["file_id", "librarian_id"],
            unique=True,
            sqlite_where=sa.text(OUTGOING_PENDING_SQL),
            postgresql_where=sa.text(OUTGOING_PENDING_SQL),
        )


def downgrade() -> None:
    with op.batch_alter_table("outgoing_transfers", schema=None) as batch_op:
        batch_op.drop_index("uq_outgoing_transfers_pending_file")
        batch_op.drop_index(batch_op.f("ix_outgoing_transfers_status_updated_at"))
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("source_path")

    with op.batch_alter_table("transfer_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_batches_mover_status"))
        batch_op.drop_column("polled_at")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("run_requested_at")
        batch_op.drop_column("bytes_moved")
        batch_op.drop_column("endpoint")
        batch_op.drop_column("submission_id")
        batch_op.alter_column(
            "status", existing_type=_batch_status(), type_=_transfer_status(), nullable=False
        )

    with op.batch_alter_table("incoming_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incoming_transfers_librarian_id_source_transfer_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_incoming_transfers_librarian_id_librarians"), type_="foreignkey"
        )
        batch_op.drop_column("source_store")
        batch_op.drop_column("librarian_id")

    with op.batch_alter_table("librarians", schema=None) as batch_op:
        batch_op.drop_column("last_error_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("collection_id")
        batch_op.drop_column("mover")
