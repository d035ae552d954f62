"""Clones between real librarians: ``librarian serve`` processes on loopback, each with its
own catalogue, stores and DAGSTER_HOME, talking through the API, moving bytes with
``LocalMover``, driven by their own sensors and runs. Peers are added with the pinned body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from librarian_dagster.client import LibrarianClient
from librarian_dagster.storage.checksums import hash_path
from tests.clone_live import (
    admin,
    connect,
    make_books,
    mover_tasks,
    query,
    scalar,
    site,
    wait_for,
)
from tests.live import LiveLibrarian

pytestmark = pytest.mark.live


def uploader(librarian: LiveLibrarian) -> LibrarianClient:
    with admin(librarian) as client:
        made = client.post(
            "/users", json={"name": "alice", "password": "alice-password", "level": "read_append"}
        )
        assert made.status_code == 201, made.text
    return LibrarianClient(librarian.api_url, "alice", "alice-password")


@pytest.fixture
def librarians(tmp_path: Path) -> Iterator[list[LiveLibrarian]]:
    started: list[LiveLibrarian] = []
    yield started
    for librarian in started:
        librarian.stop()


def start(started: list[LiveLibrarian], *sites: LiveLibrarian) -> None:
    for librarian in sites:
        librarian.start()
        started.append(librarian)


def test_300_books_reach_the_peer_in_batches_of_at_most_64_each_sent_once(
    tmp_path: Path, librarians: list[LiveLibrarian]
) -> None:
    a, b = site(tmp_path, "site-a"), site(tmp_path, "site-b")
    start(librarians, a, b)
    connect(a, b)
    connect(b, a)
    books = make_books(tmp_path / "books", 300)
    with uploader(a) as alice:
        alice.upload_many(books)
    at_b = "SELECT count(*) FROM remote_instances r JOIN librarians l ON l.id = r.librarian_id"
    wait_for(lambda: scalar(a, at_b + " WHERE l.name = 'site-b'") == 300, 600, "300 at b", a, b)
    # a: a remote instance at b for each book; b: a verified copy and a remote instance at a.
    names = {name for _, name in books}
    assert {
        row[0]
        for row in query(
            a, "SELECT f.name FROM files f JOIN remote_instances r ON r.file_id = f.id"
        )
    } == names
    stored = query(
        b,
        "SELECT f.name, f.checksum, i.path, f.source FROM files f "
        "JOIN instances i ON i.file_id = f.id",
    )
    assert {row[0] for row in stored} == names
    for name, checksum, path, source in stored:
        assert str(hash_path(path)) == checksum and source == "site-a", name
    assert scalar(b, at_b + " WHERE l.name = 'site-a'") == 300
    # Batches of at most 64 books; every book given to the mover once; nothing sent back.
    tasks = mover_tasks(a)
    assert tasks and max(len(items) for items in tasks) <= 64
    sources = [item["source"] for items in tasks for item in items]
    assert len(sources) == len(set(sources)) == 300
    assert mover_tasks(b) == [] and scalar(b, "SELECT count(*) FROM outgoing_transfers") == 0
    assert scalar(a, "SELECT count(*) FROM outgoing_transfers WHERE status != 'stored'") == 0
    assert list((b.directory / "stores/main/staging").iterdir()) == []
    with admin(a) as client:
        (peer,) = client.get("/peers").json()["peers"]
    assert peer["books_held"] == 300 and peer["books_in_flight"] == 0
    assert peer["last_error"] is None and peer["callbacks_waiting"] == 0


def test_books_go_down_a_chain_and_never_back(
    tmp_path: Path, librarians: list[LiveLibrarian]
) -> None:
    a, b, c = site(tmp_path, "site-a"), site(tmp_path, "site-b"), site(tmp_path, "site-c")
    start(librarians, a, b, c)
    connect(a, b)
    connect(b, a)
    connect(b, c)
    connect(c, b)
    books = make_books(tmp_path / "books", 12)
    with uploader(a) as alice:
        alice.upload_many(books)
    wait_for(lambda: scalar(c, "SELECT count(*) FROM files") == 12, 600, "12 at c", a, b, c)
    wait_for(
        lambda: scalar(b, "SELECT count(*) FROM outgoing_transfers WHERE status='stored'") == 12,
        120,
        "c's callbacks at b",
        a,
        b,
        c,
    )
    sent_by_a = [item for items in mover_tasks(a) for item in items]
    sent_by_b = [item for items in mover_tasks(b) for item in items]
    assert len(sent_by_a) == len({i["source"] for i in sent_by_a}) == 12
    assert len(sent_by_b) == len({i["source"] for i in sent_by_b}) == 12
    assert mover_tasks(c) == []
    # b sent nothing back to a, c nothing to anyone; c's books come from a, through b.
    peers_of_b = "SELECT l.name FROM outgoing_transfers o JOIN librarians l ON l.id=o.librarian_id"
    assert {row[0] for row in query(b, peers_of_b)} == {"site-c"}
    assert scalar(c, "SELECT count(*) FROM outgoing_transfers") == 0
    assert {row[0] for row in query(c, "SELECT DISTINCT source FROM files")} == {"site-a"}
    held_at = (
        "SELECT DISTINCT l.name FROM remote_instances r JOIN librarians l ON l.id=r.librarian_id"
    )
    assert {row[0] for row in query(a, held_at)} == {"site-b"}
    assert {row[0] for row in query(b, held_at)} == {"site-a", "site-c"}
    assert {row[0] for row in query(c, held_at)} == {"site-b"}
