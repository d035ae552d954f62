"""Run alembic migrations from code: ``librarian init`` and the tests call ``upgrade``.

The alembic environment lives inside the package (``catalogue/migrations``) so an installed
librarian can migrate its catalogue without a checkout or an ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalogue to ``revision``; a no-op when it is already there."""
    command.upgrade(alembic_config(engine), revision)


def head_revision() -> str:
    """The revision this version of the librarian needs (the newest migration it ships)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    """The catalogue's schema revision (None before the first migration).

    Read straight from alembic's version table: this runs on every ``/ping``.
    """
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
