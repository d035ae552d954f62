"""rolling cursor: where a rolling store's next cleanup run goes on looking

- ``stores``: ``rolling_after_file_id``. A ``rolling_cleanup`` run looks at a page of the
  store's copies past its limit after this file id and moves it past everything it looked
  at, kept or not; a run that reaches the end starts over from 0. Books kept (a peer down,
  a corrupt copy elsewhere) no longer take the same slots every hour, and copies whose ids
  are out of age order (a catalogue rebuilt from sidecars) cannot stall the selection.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "rolling_after_file_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=False,
                server_default="0",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("rolling_after_file_id")
