"""The callback outbox on SQLite and PostgreSQL: enqueue, take what is due, deliver, back off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.migrate import upgrade
from librarian_dagster.catalogue.models import CallbackOutbox, Librarian
from librarian_dagster.services import outbox


def add_peer(catalogue: Catalogue, name: str) -> int:
    with catalogue.session() as session:
        peer = Librarian(name=name, url=f"http://{name}", remote_user="us", encrypted_password=b"x")
        session.add(peer)
        session.flush()
        return peer.id


def rows(catalogue: Catalogue) -> int:
    with catalogue.session() as session:
        return session.scalar(select(func.count()).select_from(CallbackOutbox)) or 0


def take(catalogue: Catalogue, **kwargs: object) -> list[outbox.Callback]:
    with catalogue.session() as session:
        return outbox.take_due(session, **kwargs)  # type: ignore[arg-type]


def test_enqueue_is_part_of_the_callers_transaction(catalogue: Catalogue) -> None:
    peer = add_peer(catalogue, "site-b")

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted), catalogue.session() as session:
        outbox.enqueue(session, peer, "/clones/complete", {"transfer_ids": [1]})
        raise Interrupted  # the work it reports did not commit: nor does the callback
    assert rows(catalogue) == 0
    with catalogue.session() as session:
        callback_id = outbox.enqueue(session, peer, "/clones/complete", {"transfer_ids": [1]})
    (due,) = take(catalogue)
    assert due == outbox.Callback(callback_id, peer, "/clones/complete", {"transfer_ids": [1]}, 0)


def test_take_due_is_oldest_first_bounded_filtered_and_leased(catalogue: Catalogue) -> None:
    b, c = add_peer(catalogue, "site-b"), add_peer(catalogue, "site-c")
    now = datetime.now(UTC)
    with catalogue.session() as session:
        ids = [outbox.enqueue(session, b if i % 2 else c, "/r", {"n": i}) for i in range(5)]
        for offset, callback_id in enumerate(ids):
            row = session.get(CallbackOutbox, callback_id)
            assert row is not None
            row.next_attempt_at = now - timedelta(minutes=10 - offset)
        session.get(CallbackOutbox, ids[4]).next_attempt_at = now + timedelta(hours=1)  # type: ignore[union-attr]
    assert [cb.payload["n"] for cb in take(catalogue, limit=2, now=now)] == [0, 1]
    assert [cb.payload["n"] for cb in take(catalogue, librarian_ids=[b], now=now)] == [3]
    assert [cb.payload["n"] for cb in take(catalogue, now=now)] == [2]  # the rest is leased
    assert take(catalogue, now=now) == []
    later = now + outbox.LEASE + timedelta(seconds=1)  # their deliverer died: due again
    assert [cb.payload["n"] for cb in take(catalogue, now=later)] == [0, 1, 2, 3]


def test_delivered_callbacks_are_never_taken_again(catalogue: Catalogue) -> None:
    peer = add_peer(catalogue, "site-b")
    with catalogue.session() as session:
        callback_id = outbox.enqueue(session, peer, "/r", {})
    (due,) = take(catalogue)
    with catalogue.session() as session:
        outbox.mark_delivered(session, due.id)
        assert outbox.mark_failed(session, due.id, "too late") is None  # delivered stays so
    far_future = datetime.now(UTC) + timedelta(days=365)
    assert take(catalogue, now=far_future) == []
    with catalogue.session() as session:
        row = session.get(CallbackOutbox, callback_id)
        assert row is not None and row.delivered_at is not None and row.attempts == 0


def test_failures_back_off_exponentially_and_keep_why(catalogue: Catalogue) -> None:
    peer = add_peer(catalogue, "site-b")
    with catalogue.session() as session:
        callback_id = outbox.enqueue(session, peer, "/r", {})
    now = datetime.now(UTC)
    waits = []
    for attempt in range(1, 10):
        with catalogue.session() as session:
            retry_at = outbox.mark_failed(session, callback_id, f"refused {attempt}", now=now)
        assert retry_at is not None
        waits.append(retry_at - now)
        assert take(catalogue, now=retry_at - timedelta(seconds=1)) == []
        (again,) = take(catalogue, now=retry_at)
        assert again.attempts == attempt
    assert waits[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    assert waits[-1] == outbox.BACKOFF_MAX  # capped, and never given up
    with catalogue.session() as session:
        outbox.mark_failed(session, callback_id, "x" * 10_000, now=now)
        row = session.get(CallbackOutbox, callback_id)
        assert row is not None and len(row.last_error or "") == outbox.MAX_ERROR_LENGTH


def test_backoff_values() -> None:
    assert outbox.backoff(0) == timedelta(0)
    assert outbox.backoff(1) == outbox.BACKOFF_FIRST
    assert outbox.backoff(2) == 2 * outbox.BACKOFF_FIRST
    assert outbox.backoff(1000) == outbox.BACKOFF_MAX


@pytest.mark.postgres
def test_two_deliverers_at_once_never_take_the_same_callback(postgres_schema_url: str) -> None:
    catalogue = Catalogue(postgres_schema_url)
    upgrade(catalogue.engine)
    try:
        peer = add_peer(catalogue, "site-b")
        with catalogue.session() as session:
            for i in range(4):
                outbox.enqueue(session, peer, "/r", {"n": i})
        with catalogue.session() as first:  # still open: its rows are locked, not yet leased
            taken_first = outbox.take_due(first, limit=2)
            with catalogue.session() as second:
                taken_second = outbox.take_due(second)
        assert [cb.payload["n"] for cb in taken_first] == [0, 1]
        assert [cb.payload["n"] for cb in taken_second] == [2, 3]  # skipped, did not wait
    finally:
        catalogue.dispose()
