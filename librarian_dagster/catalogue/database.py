"""Engines and the unit-of-work helper that services, API, CLI and Dagster ops all share.

``Catalogue`` owns one engine per database URL and hands out sessions through
``catalogue.session()``: commit on success, rollback on any exception, always closed. SQLite
gets WAL, foreign keys and a busy timeout on every connection (several processes — the API,
the Dagster daemon and its runs — write to it at once); PostgreSQL uses a small pool with
pre-ping so a restarted server does not break a long-running process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from librarian_dagster.storage.posix import narrow_mode

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # LIKE as on PostgreSQL (case-sensitive), which also lets prefix LIKEs use the name index.
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that later upgrades to a writer
    # fails with "database is locked" instead of waiting when another process writes.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def private_sqlite_file(path: Path) -> None:
    """Make the catalogue file (and its WAL and shared-memory files) readable by us only.

    It holds every password hash. SQLite creates ``-wal`` and ``-shm`` with the database
    file's permissions, so the file is created 0600 before SQLite first opens it, whatever
    the umask; an existing file of ours (from before this rule) is narrowed to 0600 too.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        narrow_mode(candidate, 0o600)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite catalogue URL; None for another backend or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def create_catalogue_engine(url: str, **kwargs: Any) -> Engine:
    """An engine configured for the catalogue's backend (SQLite or PostgreSQL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database_file = sqlite_file(url)
        if database_file is not None:
            private_sqlite_file(database_file)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling is disabled so BEGIN IMMEDIATE is ours to send.
        event.listen(engine, "connect", lambda conn, _r: setattr(conn, "isolation_level", None))
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.0's bare "postgresql" means psycopg2; be explicit about psycopg 3.
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 5)
    return create_engine(url, **kwargs)


class Catalogue:
    """A database URL, its engine and a session factory: the one way to talk to the catalogue."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_catalogue_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back if it raises."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


_catalogues: dict[str, Catalogue] = {}
_lock = threading.Lock()


def get_catalogue(url: str) -> Catalogue:
    """One shared ``Catalogue`` per URL and process (engines are expensive; pools are shared)."""
    with _lock:
        catalogue = _catalogues.get(url)
        if catalogue is None:
            catalogue = _catalogues[url] = Catalogue(url)
        return catalogue


def dispose_catalogues() -> None:
    """Close the pools of every shared catalogue and forget them (a later ``get_catalogue``
    opens a new one; an engine still held elsewhere opens a new pool when next used). For a
    process that is done with its catalogues: the test suite, after each test, so that the
    PostgreSQL schemas of a thousand tests do not each keep connections open."""
    with _lock:
        found = list(_catalogues.values())
        _catalogues.clear()
    for catalogue in found:
        catalogue.dispose()
