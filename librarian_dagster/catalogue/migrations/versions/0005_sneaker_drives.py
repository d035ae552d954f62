"""sneaker drives: how far a drive's fills have looked; which drive a book came on

- ``stores.fill_high_water_file_id``: every book with an id up to this one is on the drive,
  on another drive carrying books the same way, or already at the drive's destination, so a
  fill looks only above it (and the fill sensor compares it with the newest book, one
  indexed look-up, instead of asking which books the drive lacks). Wiping the drive sets it
  back to 0. ``stores.drive_trip``: the drive's round trip (1, one more per wipe).
- ``incoming_transfers``: ``drive_uuid``, ``drive_trip``, ``drive_store`` and
  ``drive_path``, for books ingested from a drive: which drive and trip (its ingest's
  progress is read by them, through a new index), the origin's store it belongs to (named
  in the callback that tells the origin) and where it is mounted here (the run that copies
  it is asked for by a sensor).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "fill_high_water_file_id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=False,
                server_default="0",
            )
        )
        batch_op.add_column(
            sa.Column("drive_trip", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("incoming_transfers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drive_uuid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("drive_store", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("drive_trip", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("drive_path", sa.String(length=4096), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_incoming_transfers_drive_uuid"), ["drive_uuid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("incoming_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incoming_transfers_drive_uuid"))
        batch_op.drop_column("drive_path")
        batch_op.drop_column("drive_trip")
        batch_op.drop_column("drive_store")
        batch_op.drop_column("drive_uuid")
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_column("drive_trip")
        batch_op.drop_column("fill_high_water_file_id")
