"""keep it right: grouped operator events, and the integrity job's slice index

- ``events``: ``count`` and ``last_at`` (the same cause raised again while its event is open
  bumps these instead of adding a row: one event, one message, for a peer down for a week),
  ``notified_at`` (when the notifier last sent it; a reminder goes once a day at most),
  ``resolved_by`` and ``note`` (who closed it and why), and an index on
  ``(kind, subject, resolved)`` that the grouping look-up uses.
- ``instances``: an index on ``(verified_at, id)``: the integrity job reads copies least
  recently verified first, a bounded slice per run, without sorting every copy. Copies
  never verified get their creation time (ingest verified them then), so the order needs no
  ``NULLS FIRST`` that PostgreSQL and SQLite disagree on.
- ``corrupt_files``: ``requested_at``, when a peer was last asked to re-send the copy: the
  repair's own clock (``updated_at`` moves whenever a pass re-reads the copy).
- ``transfer_batches``: ``progress_at``, when the mover's task last moved bytes (or was
  submitted): a task with no progress for ``[transfer] stuck_after_hours`` is given up.
- ``instances``: ``deleted_at`` and ``deleted_reason``: a rolling store's cleanup keeps the
  row of a copy it deleted (out of service), with when and why; and an index on
  ``(store_id, available, file_id)``: its selection reads a store's copies in service
  oldest first (and newest first, for a byte budget) without passing the deleted ones.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_events_kind_subject_resolved"),
            ["kind", "subject", "resolved"],
            unique=False,
        )
    with op.batch_alter_table("transfer_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("corrupt_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE instances SET verified_at = created_at WHERE verified_at IS NULL")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_reason", sa.Text(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_instances_verified_at_id"), ["verified_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_instances_store_id_available_file_id"),
            ["store_id", "available", "file_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_store_id_available_file_id"))
        batch_op.drop_index(batch_op.f("ix_instances_verified_at_id"))
        batch_op.drop_column("deleted_reason")
        batch_op.drop_column("deleted_at")
    with op.batch_alter_table("corrupt_files", schema=None) as batch_op:
        batch_op.drop_column("requested_at")
    with op.batch_alter_table("transfer_batches", schema=None) as batch_op:
        batch_op.drop_column("progress_at")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_kind_subject_resolved"))
        batch_op.drop_column("note")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("notified_at")
        batch_op.drop_column("last_at")
        batch_op.drop_column("count")
