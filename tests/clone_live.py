"""Live clone tests' helpers: real ``librarian serve`` processes that know each other.

Each librarian has its own catalogue, stores and DAGSTER_HOME (``tests.live``); peers are
added through the pinned ``POST /api/v2/peers`` body, after each side has made the other
a callback account named after it. Assertions read the catalogues directly (the live
processes keep running), as the paper's test platform does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.live import ADMIN_PASSWORD, LiveLibrarian

CLONE_CONFIG = [
    "[transfer]",
    "batch_min = 1",
    "batch_max = 64",
    "batch_max_wait_seconds = 0",
    "poll_interval_seconds = 1",
    "relaunch_after_seconds = 60",
    "retry_backoff_seconds = 2",
    "retry_backoff_max_seconds = 10",
    "callback_backoff_seconds = 2",
    "callback_backoff_max_seconds = 5",
    "catalogue_lag_seconds = 1",
]
PEER_PASSWORD = "live-peer-password"


def site(root: Path, name: str, *extra: str) -> LiveLibrarian:
    directory = root / name
    directory.mkdir(parents=True)
    return LiveLibrarian(directory, name=name, extra_config=[*CLONE_CONFIG, *extra])


def admin(librarian: LiveLibrarian) -> httpx.Client:
    return httpx.Client(
        base_url=f"{librarian.api_url}/api/v2", auth=("admin", ADMIN_PASSWORD), timeout=60
    )


def connect(a: LiveLibrarian, b: LiveLibrarian) -> None:
    """b becomes a's peer: b gets a callback account named after a, a a peer (pinned body)."""
    with admin(b) as client:
        made = client.post(
            "/users", json={"name": a.name, "password": PEER_PASSWORD, "level": "callback"}
        )
        assert made.status_code == 201, made.text
    with admin(a) as client:
        added = client.post(
            "/peers",
            json={
                "name": b.name,
                "url": b.api_url,
                "user": a.name,
                "password": PEER_PASSWORD,
                "mover": "local",
            },
        )
        assert added.status_code == 201, added.text


def query(librarian: LiveLibrarian, sql: str, **params: Any) -> list[Any]:
    """Rows from a live librarian's catalogue (read-only, a short connection)."""
    url = librarian.database_url or f"sqlite:///{librarian.directory / 'catalogue.sqlite'}"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()


def scalar(librarian: LiveLibrarian, sql: str, **params: Any) -> Any:
    return query(librarian, sql, **params)[0][0]


def mover_tasks(librarian: LiveLibrarian) -> list[list[dict[str, Any]]]:
    """The items of every task the librarian's local mover was given."""
    root = librarian.directory / "state" / "movers" / "local"
    if not root.is_dir():
        return []
    return [
        json.loads((task / "task.json").read_text())["items"]
        for task in sorted(root.iterdir())
        if (task / "task.json").exists()
    ]


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, *sites: LiveLibrarian
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for librarian in sites:
            if librarian.process is not None and librarian.process.poll() is not None:
                raise AssertionError(f"{librarian.name} exited:\n{librarian.log()}")
        if condition():
            return
        time.sleep(1)
    logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in sites)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def make_books(root: Path, count: int, prefix: str = "2026/12/07") -> list[tuple[Path, str]]:
    """``count`` books: every third a directory of three files, the others files."""
    pairs = []
    for i in range(count):
        if i % 3 == 2:
            book = root / f"dir{i:04d}"
            (book / "sub").mkdir(parents=True)
            (book / "a.dat").write_bytes(os.urandom(200 + i))
            (book / "sub" / "b.dat").write_bytes(os.urandom(50))
            (book / "sub" / "c.txt").write_text(f"book {i}")
        else:
            book = root / f"file{i:04d}.dat"
            root.mkdir(parents=True, exist_ok=True)
            book.write_bytes(os.urandom(100 + i))
        pairs.append((book, f"{prefix}/book{i:04d}"))
    return pairs


def graphql(librarian: LiveLibrarian, query_text: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{librarian.webserver_url}/graphql",
        json={"query": query_text, "variables": variables},
        timeout=60,
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return dict(body["data"])
