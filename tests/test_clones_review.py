"""Regression tests for what a review of the clone pipeline found: a book committing late on
PostgreSQL, a peer that is down starving the others, answers that leave books out or point
our mover elsewhere, a peer that holds a book but no copy of it, a peer check holding the
catalogue, a retry after a cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import (
    File,
    Instance,
    Librarian,
    OutgoingTransfer,
    RemoteInstance,
    Store,
)
from librarian_dagster.services import clones, clones_run, peers, transfers
from librarian_dagster.services.clones_stage import staging_problem
from librarian_dagster.services.movers import build_movers
from librarian_dagster.states import TransferStatus
from librarian_dagster.wire import CloneStageResponse, PeerCreate, StagedClone
from tests.clone_helpers import (
    PEER_PASSWORD,
    befriend_both,
    clone_sites,
    deliver,
    links_for,
    pump,
    step_receiver,
    step_sender,
)
from tests.test_clones import count, sent_items, upload


def book(session: Session, name: str, store_id: int, when: datetime) -> int:
    file = File(
        name=name,
        size=1,
        checksum="xxh3_128:" + "0" * 32,
        uploader="u",
        source="site-a",
        created_at=when,
    )
    session.add(file)
    session.flush()
    session.add(Instance(file_id=file.id, store_id=store_id, path=f"/x/{name}"))
    session.flush()
    return file.id


@pytest.mark.postgres
def test_the_mark_never_passes_a_book_still_committing(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """PostgreSQL hands out ids before commit: book 1 may commit after book 2. Books are
    looked at only once they are catalogue_lag_seconds old, so the mark waits for book 1."""
    with clone_sites(
        tmp_path, ["site-a", "site-b"], [postgres_schema_url, ""], catalogue_lag_seconds=60
    ) as sites:
        a = sites["site-a"]
        befriend_both(a, sites["site-b"])
        with a.catalogue.session() as session:
            store_id = session.scalars(select(Store.id)).one()
        now = datetime.now(UTC)
        slow = Session(a.catalogue.engine, expire_on_commit=False)
        first = book(slow, "2026/slow", store_id, now)  # its transaction is still open
        with a.catalogue.session() as session:
            second = book(session, "2026/fast", store_id, now)
        assert first < second
        assert clones.form_batches(a.catalogue, a.settings) == []  # both too young
        slow.commit()
        slow.close()
        later = now + timedelta(seconds=61)
        (formed,) = clones.form_batches(a.catalogue, a.settings, now=later)
        assert formed.books == 2
        with a.catalogue.session() as session:
            assert set(session.scalars(select(OutgoingTransfer.file_id))) == {first, second}


def test_a_down_peer_does_not_starve_the_others(tmp_path: Path) -> None:
    with clone_sites(
        tmp_path,
        ["site-a", "site-b", "site-c"],
        max_active_transfers=2,
        batch_max=1,
        max_batches_per_tick=2,
    ) as sites:
        a, c = sites["site-a"], sites["site-c"]
        befriend_both(a, sites["site-b"])
        befriend_both(a, c)
        upload(a, tmp_path, 6)
        for _ in range(20):
            step_sender(a, sites, frozenset({"site-b"}))
            step_receiver(c)
            deliver(c, sites)
            deliver(a, sites, frozenset({"site-b"}))
            if count(c, File) == 6:
                break
        assert count(c, File) == 6  # c got every book while b was down
        with a.catalogue.session() as session:
            b_id = session.scalars(select(Librarian.id).where(Librarian.name == "site-b")).one()
        with a.catalogue.session() as session:
            assert clones.waiting_batches(session, b_id) == 2  # max_batches_per_tick, no more


class EditedAnswers:
    """The real peer, but its stage answers edited by ``edit`` on the way back."""

    def __init__(self, sites, edit) -> None:  # type: ignore[no-untyped-def]
        self.links = links_for(sites)
        self.edit = edit

    def __call__(self, access):  # type: ignore[no-untyped-def]
        link = self.links(access)
        edit = self.edit

        class Edited:
            def stage(self, request):  # type: ignore[no-untyped-def]
                return edit(link.stage(request))

            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(link, name)

        return Edited()


def test_books_an_answer_leaves_out_or_misplaces_are_sent_again(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 3)
        precious = tmp_path / "precious"
        precious.write_text("not yours")

        def hostile(answer: CloneStageResponse) -> CloneStageResponse:
            kept = list(answer.items[:2])  # the third left out
            kept[1] = StagedClone(
                **{**kept[1].model_dump(), "staging_path": str(precious)}
            )  # the second pointed at a file of ours
            return CloneStageResponse(items=kept, endpoint=answer.endpoint)

        (batch,) = clones.form_batches(a.catalogue, a.settings)
        outcome = clones_run.run_batch(
            a.catalogue,
            a.settings,
            batch.batch_id,
            links=EditedAnswers(sites, hostile),
            movers=build_movers(a.settings),
        )
        assert sorted(outcome.resent) == sorted(names[1:])
        with a.catalogue.session() as session:
            rows = {r.file.name: r for r in session.scalars(select(OutgoingTransfer))}
            assert (
                rows[names[2]].batch_id is None and "left it out" in rows[names[2]].failure_reason
            )
            assert "not a staging directory" in (rows[names[1]].failure_reason or "")
        assert precious.read_text() == "not yours"
        pump(sites)  # the next batches, answered truthfully, carry them
        assert count(b, File) == 3


def test_staging_paths_a_mover_may_write_to() -> None:
    staging = "/data/main/staging/" + "a" * 32
    assert staging_problem(f"{staging}/book", "2026/book") is None
    for path in (
        "",
        f"{staging}/other",
        "/etc/passwd",
        f"/data/main/store/{'a' * 32}/book",
        f"{staging}/../../../book",
        "relative/staging/" + "a" * 32 + "/book",
    ):
        assert staging_problem(path, "2026/book") is not None, path


def test_a_peer_holding_a_book_but_no_copy_of_it_is_not_a_copy(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], max_attempts=2) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 1)
        pump(sites)
        with a.catalogue.session() as session:  # a forgets b's copy and will send it again
            session.execute(RemoteInstance.__table__.delete())
            row = session.scalars(select(OutgoingTransfer)).one()
            row.status = TransferStatus.FAILED
        with b.catalogue.session() as session:  # b's copy is out of service (corrupt)
            session.scalars(select(Instance)).one().available = False
        with a.catalogue.session() as session:
            retry = transfers.retry_transfer(session, row.id)
        pump(sites)
        assert count(a, RemoteInstance) == 0  # not recorded as held there
        with a.catalogue.session() as session:
            row = session.get(OutgoingTransfer, retry.id)
            assert row is not None and row.status == TransferStatus.FAILED
            assert "no copy is in service" in (row.failure_reason or "")


def test_a_peer_is_asked_without_holding_the_catalogue(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        from librarian_dagster.services import accounts
        from librarian_dagster.states import UserLevel

        with b.catalogue.session() as session:
            accounts.create_user(
                session,
                accounts.password_hasher(b.settings.security),
                "site-a",
                PEER_PASSWORD,
                UserLevel.CALLBACK,
            )
        held: list[int] = []
        real = links_for(sites)

        def watching(access):  # type: ignore[no-untyped-def]
            held.append(a.catalogue.engine.pool.checkedout())
            return real(access)

        peers.add_peer(
            a.catalogue,
            a.settings,
            PeerCreate(name="site-b", url=b.url, user="site-a", password=PEER_PASSWORD),
            links=watching,
        )
        assert held == [0]  # no connection (no transaction, no lock) while the peer answers


def test_a_retry_after_a_cancel_asks_the_peer_afresh(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 1)
        step_sender(a, sites)
        with a.catalogue.session() as session:
            row = session.scalars(select(OutgoingTransfer)).one()
            transfers.cancel_transfer(session, row.id, "admin")
        with a.catalogue.session() as session:
            info = transfers.retry_transfer(session, row.id)
        assert info.id != row.id  # a new transfer: the peer stages it afresh
        pump(sites)  # the cancel reaches b (it drops that staging); the retry is stored
        assert count(b, File) == 1 and len(sent_items(a)) == 2
