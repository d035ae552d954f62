"""Alembic environment: runs on the engine handed in by ``catalogue.migrate``."""

from __future__ import annotations

from alembic import context

from librarian_dagster.catalogue.models import Base

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
