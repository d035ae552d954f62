"""The data dir is 0700 and the SQLite catalogue (and its WAL and shm files) 0600, any umask."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.services import accounts
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.settings import LibrarianSettings


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_catalogue_is_private_whatever_the_umask(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path, open_umask: None
) -> None:
    database = tmp_path / "private" / "catalogue.sqlite"
    settings = make_settings(database_url=f"sqlite:///{database}", data_dir=str(tmp_path / "d"))
    prepare(settings)
    with get_catalogue(settings.catalogue_url).session() as session:  # a write: WAL and shm
        accounts.create_user(
            session, accounts.password_hasher(settings.security), "u", "password-123", "read_only"
        )
    assert mode(settings.data_dir) == 0o700
    assert mode(database.parent) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert mode(database.with_name(database.name + suffix)) == 0o600, suffix


def test_an_old_world_readable_catalogue_is_narrowed(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    database = data_dir / "catalogue.sqlite"
    database.touch()
    os.chmod(database, 0o644)
    prepare(make_settings(database_url=f"sqlite:///{database}", data_dir=str(data_dir)))
    assert mode(data_dir) == 0o700 and mode(database) == 0o600
