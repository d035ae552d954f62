"""Shared fixtures: catalogues on SQLite and PostgreSQL, settings files, API clients.

PostgreSQL tests use the server at 127.0.0.1:5432 (database ``test``, or
``LIBRARIAN_TEST_POSTGRES_URL``), each test in a schema of its own that is dropped afterwards.
They never skip: an unreachable server is an error (deselect with ``-m "not postgres"``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from librarian_dagster.catalogue.database import Catalogue, dispose_catalogues
from librarian_dagster.catalogue.migrate import upgrade
from librarian_dagster.settings import LibrarianSettings, load_settings

if TYPE_CHECKING:
    from tests.client_helpers import RunningLibrarian

POSTGRES_URL = os.environ.get(
    "LIBRARIAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# Running serves leave pointers for admin commands (cli.serve_lock.registry_dir): the tests'
# go to a directory of this session, never the user's own state directory.
if "LIBRARIAN_STATE_DIR" not in os.environ:
    os.environ["LIBRARIAN_STATE_DIR"] = tempfile.mkdtemp(prefix="librarian-test-state-")
    atexit.register(shutil.rmtree, os.environ["LIBRARIAN_STATE_DIR"], ignore_errors=True)

# Cheap argon2 for tests that log in many times; one test checks the production defaults.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 1024, "argon2_parallelism": 1}


@pytest.fixture(autouse=True)
def _catalogue_pools_closed() -> Iterator[None]:
    """Each test's shared catalogues are closed after it: a PostgreSQL test opens one per
    schema, and their idle connections would otherwise add up to the server's limit."""
    yield
    dispose_catalogues()


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def catalogue(database_url: str) -> Iterator[Catalogue]:
    catalogue = Catalogue(database_url)
    upgrade(catalogue.engine)
    yield catalogue
    catalogue.dispose()


def write_config(directory: Path, body: str) -> Path:
    path = directory / "librarian.toml"
    path.write_text(body)
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., LibrarianSettings]:
    """Settings from a TOML file in tmp_path; keyword arguments override top-level keys."""

    def make(
        database_url: str | None = None, extra_toml: str = "", **overrides: Any
    ) -> LibrarianSettings:
        url = database_url or f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
        lines = [
            'name = "test-site"',
            f'database_url = "{url}"',
            "[security]",
            *(f"{key} = {value}" for key, value in FAST_ARGON2.items()),
            "[[stores]]",
            'name = "main"',
            'root = "stores/main"',
            "reserve_bytes = 0",
            extra_toml,
        ]
        return load_settings(write_config(tmp_path, "\n".join(lines) + "\n"), **overrides)

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A throwaway persistent Dagster instance (SQLite storage under tmp_path)."""
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def librarian(make_settings: Callable[..., LibrarianSettings]) -> Iterator[RunningLibrarian]:
    """A real HTTP librarian on SQLite (``tests.client_helpers``); modules may override it."""
    from tests.client_helpers import running_librarian  # it imports this module

    with running_librarian(make_settings()) as running:
        yield running


@pytest.fixture
def configured(
    librarian: RunningLibrarian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RunningLibrarian:
    """One connection, ``site``, as the read_append user; the password in its env var."""
    from librarian_dagster.states import UserLevel
    from tests.api_helpers import credentials
    from tests.client_helpers import PASSWORD_VAR, write_client_config

    user, password = credentials(UserLevel.READ_APPEND)
    config = write_client_config(tmp_path / "client.toml", {"site": (librarian.url, user)})
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(config))
    monkeypatch.setenv(PASSWORD_VAR, password)
    for name in ("LIBRARIAN_SERVER", "LIBRARIAN_PASSWORD", "LIBRARIAN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return librarian
