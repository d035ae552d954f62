"""Live clones through outages and damage: a peer killed while batches are in flight, the
sender killed while the peer stores, a byte flipped in the peer's staging. Nothing is lost,
nothing is recorded or sent twice, and the damaged book is sent again and stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from librarian_dagster.client import LibrarianClient
from tests.clone_live import (
    connect,
    graphql,
    make_books,
    mover_tasks,
    query,
    scalar,
    site,
    wait_for,
)
from tests.live import LiveLibrarian
from tests.test_clones_live import start, uploader

pytestmark = pytest.mark.live

HELD_AT = (
    "SELECT count(*) FROM remote_instances r JOIN librarians l ON l.id = r.librarian_id "
    "WHERE l.name = :peer"
)
SELECTOR = {
    "repositoryLocationName": "librarian",
    "repositoryName": "__repository__",
    "sensorName": "receive_clones_sensor",
}


@pytest.fixture
def librarians() -> Iterator[list[LiveLibrarian]]:
    started: list[LiveLibrarian] = []
    yield started
    for librarian in started:
        librarian.stop()


def kill(librarian: LiveLibrarian) -> None:
    """kill -9 of ``librarian serve`` (its children follow: they die with their parent)."""
    assert librarian.process is not None
    librarian.process.kill()
    librarian.process.wait(30)


def no_duplicates(a: LiveLibrarian, b: LiveLibrarian, books: int) -> None:
    assert scalar(b, "SELECT count(*) FROM files") == books
    assert scalar(b, "SELECT count(*) FROM instances") == books
    assert scalar(b, "SELECT count(DISTINCT file_id) FROM remote_instances") == books
    assert scalar(b, "SELECT count(*) FROM remote_instances") == books
    assert scalar(a, "SELECT count(*) FROM remote_instances") == books
    sources = [item["source"] for items in mover_tasks(a) for item in items]
    assert len(sources) == len(set(sources)) == books  # each book given to the mover once
    assert scalar(b, "SELECT count(*) FROM callback_outbox WHERE delivered_at IS NULL") == 0
    assert scalar(a, "SELECT count(*) FROM callback_outbox WHERE delivered_at IS NULL") == 0


def test_either_side_down_costs_only_delay(tmp_path: Path, librarians: list[LiveLibrarian]) -> None:
    a, b = site(tmp_path, "site-a"), site(tmp_path, "site-b")
    start(librarians, a, b)
    connect(a, b)
    connect(b, a)
    with uploader(a) as alice:
        alice.upload_many(make_books(tmp_path / "first", 30))
    # B dies while a's batches are in flight (staged or moving at its end).
    in_flight = "SELECT count(*) FROM outgoing_transfers WHERE status IN ('ongoing', 'staged')"
    wait_for(lambda: scalar(a, in_flight) > 0, 300, "a batch in flight", a, b)
    kill(b)
    owed = "SELECT count(*) FROM outgoing_transfers WHERE status != 'stored'"
    wait_for(lambda: scalar(a, "SELECT count(*) FROM transfer_batches") > 0, 60, "batches", a)
    # More books while b is down: a must try b for them (the first lot may have been all
    # handed over before the kill, leaving a nothing to call b about) and must notice.
    with uploader_again(a) as alice:
        alice.upload_many(make_books(tmp_path / "late", 10, prefix="2026/12/09"))
    noticed = "SELECT count(*) FROM librarians WHERE name = 'site-b' AND last_error IS NOT NULL"
    wait_for(lambda: scalar(a, noticed) == 1, 120, "a noticing that b is down", a)
    time.sleep(10)  # more sensor ticks with b down
    assert scalar(a, owed) > 0
    b.start()
    wait_for(lambda: scalar(a, HELD_AT, peer="site-b") == 40, 600, "40 at b", a, b)
    wait_for(lambda: scalar(a, owed) == 0, 120, "every transfer stored", a, b)
    # A dies while b stores what it sent; b's callbacks wait for a and arrive after.
    with uploader_again(a) as alice:
        alice.upload_many(make_books(tmp_path / "second", 20, prefix="2026/12/08"))
    staged_at_b = (
        "SELECT count(*) FROM incoming_transfers WHERE status IN ('staged', 'verifying', 'stored')"
    )
    wait_for(lambda: scalar(b, staged_at_b) > 40, 300, "b receiving the second lot", a, b)
    kill(a)
    # What a had handed over before it died b stores without it; the rest a sends on restart.
    handed_over = scalar(b, staged_at_b)
    assert handed_over > 40
    stored_at_b = "SELECT count(*) FROM files"
    wait_for(lambda: scalar(b, stored_at_b) >= handed_over, 300, "b storing what it got", b)
    undelivered = "SELECT count(*) FROM callback_outbox WHERE delivered_at IS NULL"
    assert scalar(b, undelivered) > 0, "b owes a its callbacks while a is down"
    a.start()
    wait_for(lambda: scalar(a, HELD_AT, peer="site-b") == 60, 600, "a hears of 60", a, b)
    wait_for(lambda: scalar(b, undelivered) == 0, 120, "b's outbox empty", a, b)
    no_duplicates(a, b, 60)


def uploader_again(librarian: LiveLibrarian) -> LibrarianClient:
    return LibrarianClient(librarian.api_url, "alice", "alice-password")


def test_a_book_damaged_in_the_peers_staging_is_refused_at_both_ends_and_sent_again(
    tmp_path: Path, librarians: list[LiveLibrarian]
) -> None:
    a, b = site(tmp_path, "site-a"), site(tmp_path, "site-b")
    start(librarians, a, b)
    connect(a, b)
    connect(b, a)
    # b stores nothing for now: its receive sensor is stopped, as an operator would in the UI.
    found = graphql(
        b,
        "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id } } }",
        s=SELECTOR,
    )
    stopped = graphql(
        b,
        "mutation($id: String!) { stopSensor(id: $id) { __typename } }",
        id=found["sensorOrError"]["id"],
    )
    assert stopped["stopSensor"]["__typename"] == "StopSensorMutationResult"
    books = make_books(tmp_path / "books", 5)
    with uploader(a) as alice:
        alice.upload_many(books)
    staged = "SELECT count(*) FROM incoming_transfers WHERE status = 'staged'"
    wait_for(lambda: scalar(b, staged) == 5, 300, "5 staged at b", a, b)
    damaged_name = books[0][1]
    (path,) = query(
        b, "SELECT staging_path FROM incoming_transfers WHERE name = :n", n=damaged_name
    )[0]
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(bytes(data))
    started = graphql(
        b,
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
        s=SELECTOR,
    )
    assert started["startSensor"]["__typename"] == "Sensor"
    wait_for(lambda: scalar(a, HELD_AT, peer="site-b") == 5, 600, "5 at b", a, b)
    # Refused at b, with the reason, and at a (its first attempt failed with b's words).
    (reason,) = query(
        b,
        "SELECT failure_reason FROM incoming_transfers WHERE name = :n AND status = 'failed'",
        n=damaged_name,
    )[0]
    assert "checksum mismatch" in reason
    (attempts, last) = query(
        a,
        "SELECT o.attempts, o.failure_reason FROM outgoing_transfers o JOIN files f "
        "ON f.id = o.file_id WHERE f.name = :n",
        n=damaged_name,
    )[0]
    assert attempts == 1 and "checksum mismatch" in last
    events = "SELECT message FROM events WHERE kind = 'clone_refused' AND subject = :n"
    assert "sent again" in query(a, events, n=damaged_name)[0][0]
    others = "SELECT max(attempts) FROM outgoing_transfers o JOIN files f ON f.id = o.file_id "
    assert scalar(a, others + "WHERE f.name != :n", n=damaged_name) == 0
    sources = [item["source"] for items in mover_tasks(a) for item in items]
    assert len(sources) == 6 and len(set(sources)) == 5  # the damaged one went twice
    assert scalar(b, "SELECT count(*) FROM files") == 5
