"""sneaker stores: a drive's state and identity

- ``stores``: ``state`` (sneaker stores only: ``filling``, ``full``, ``in_transit``,
  ``returned``; existing sneaker stores start ``filling``) and ``drive_uuid`` (the identity
  of the drive provisioned for the store, so that another drive given the same store's
  identity is told apart).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "state",
                sa.Enum(
                    "filling",
                    "full",
                    "in_transit",
                    "returned",
                    name="drivestate",
                    native_enum=False,
                    create_constraint=False,
                    length=24,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("drive_uuid", sa.String(length=36), nullable=True))
    op.execute("UPDATE stores SET state = 'filling' WHERE kind = 'sneaker'")


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("drive_uuid")
        batch_op.drop_column("state")
