"""An in-process API with one account per level, for the API and auth tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from litestar.testing import TestClient

from librarian_dagster.api.app import create_app
from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.services import accounts
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel

PASSWORD = "s3cret-password"


def credentials(level: UserLevel) -> tuple[str, str]:
    return (f"user-{level.value.replace('_', '-')}", PASSWORD)


def prepare_with_users(settings: LibrarianSettings) -> None:
    """Migrate and lay out the librarian, then add one account per level."""
    prepare(settings)
    hasher = accounts.password_hasher(settings.security)
    with get_catalogue(settings.catalogue_url).session() as session:
        for level in UserLevel:
            name, password = credentials(level)
            accounts.create_user(session, hasher, name, password, level)


@contextmanager
def api_client(settings: LibrarianSettings) -> Iterator[TestClient]:
    prepare_with_users(settings)
    with TestClient(app=create_app(settings), raise_server_exceptions=False) as client:
        yield client
