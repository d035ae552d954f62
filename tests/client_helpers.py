"""A real HTTP librarian (uvicorn in a thread, inline ingest) for client and CLI tests.

The client is tested over real sockets, not an in-process transport, so keep-alive,
streaming request bodies and connection errors behave as they do in production. Ingest runs
in a background thread of the same process (``InlineIngestLauncher``), no Dagster needed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlalchemy import func, select

from librarian_dagster.api.app import create_app
from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.client import LibrarianClient
from librarian_dagster.services.ingest_launcher import InlineIngestLauncher
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.local_store import LocalStore
from tests.api_helpers import credentials, prepare_with_users
from tests.conftest import free_port

MiB = 1 << 20


@dataclass
class RunningLibrarian:
    url: str
    settings: LibrarianSettings
    catalogue: Catalogue
    stores: dict[str, LocalStore]

    def client(self, level: UserLevel = UserLevel.READ_APPEND, **kwargs: object) -> LibrarianClient:
        user, password = credentials(level)
        return LibrarianClient(self.url, user, password, **kwargs)  # type: ignore[arg-type]


@contextmanager
def running_librarian(settings: LibrarianSettings) -> Iterator[RunningLibrarian]:
    """Serve the API on a free loopback port until the block ends."""
    prepare_with_users(settings)
    catalogue = get_catalogue(settings.catalogue_url)
    stores = open_stores(settings)
    app = create_app(settings, launcher=InlineIngestLauncher(catalogue, stores, settings))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield RunningLibrarian(f"http://127.0.0.1:{port}", settings, catalogue, stores)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_tree(root: Path) -> Path:
    """A nested book: several levels, an empty dir and file, a multi-chunk file, unicode."""
    (root / "raw" / "night1").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "raw" / "night1" / "frame.dat").write_bytes(os.urandom(2 * MiB + 123))
    (root / "raw" / "notes.txt").write_text("observing log\n")
    (root / "empty").write_bytes(b"")
    (root / "résumé-ü.txt").write_text("unicode name")
    (root / ("long-" * 30 + "name")).write_bytes(b"needs a PAX header")
    return root


def make_file(path: Path, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def count(librarian: RunningLibrarian, model: type) -> int:
    with librarian.catalogue.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# The environment variable client.toml files written by tests name for the password.
PASSWORD_VAR = "TEST_CLI_LIBRARIAN_PASSWORD"


def write_client_config(path: Path, connections: dict[str, tuple[str, str]]) -> Path:
    """A client.toml with these connections (name -> (url, user)), passwords in PASSWORD_VAR."""
    lines = []
    for name, (url, user) in connections.items():
        lines += [f'[connections."{name}"]', f'url = "{url}"', f'user = "{user}"']
        lines.append(f'password_env = "{PASSWORD_VAR}"')
    path.write_text("\n".join(lines) + "\n")
    return path
