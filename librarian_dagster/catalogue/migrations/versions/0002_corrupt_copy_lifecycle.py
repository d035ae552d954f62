"""corrupt copies: reason, detail, resolution; one open record per instance

Copies that earlier code took out of service without a record (a check found them
missing) get an open ``missing`` record, so they show in ``/corrupt`` and keep the check
failed until they are repaired or dismissed, instead of staying out of sight.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNRESOLVED_SQL = "status IN ('detected', 'refetching', 'lost')"


def upgrade() -> None:
    with op.batch_alter_table("corrupt_files", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reason",
                sa.Enum(
                    "mismatch",
                    "missing",
                    "unreadable",
                    name="corruptionreason",
                    native_enum=False,
                    length=24,
                ),
                server_default="mismatch",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
    op.execute(
        """
        INSERT INTO corrupt_files (file_id, instance_id, store_id, reason, expected_checksum,
            detail, status, attempts, detected_at, updated_at)
        SELECT i.file_id, i.id, i.store_id, 'missing', f.checksum,
            'out of service before corrupt-copy records existed (migration 0002)',
            'detected', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP
        FROM instances i JOIN files f ON f.id = i.file_id
        WHERE NOT i.available
          AND NOT EXISTS (SELECT 1 FROM corrupt_files c WHERE c.instance_id = i.id)
        """
    )
    with op.batch_alter_table("corrupt_files", schema=None) as batch_op:
        batch_op.create_index(
            "uq_corrupt_files_open_instance",
            ["instance_id"],
            unique=True,
            sqlite_where=sa.text(UNRESOLVED_SQL),
            postgresql_where=sa.text(UNRESOLVED_SQL),
        )


def downgrade() -> None:
    with op.batch_alter_table("corrupt_files", schema=None) as batch_op:
        batch_op.drop_index("uq_corrupt_files_open_instance")
        batch_op.drop_column("note")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("detail")
        batch_op.drop_column("reason")
