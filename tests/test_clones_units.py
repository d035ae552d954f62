"""Pieces of the clone pipeline on their own: forming batches (bounded, the high-water mark,
books with no copy here), the outbox's merged delivery, reconciling books never confirmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from librarian_dagster.catalogue.models import (
    CallbackOutbox,
    File,
    Instance,
    Librarian,
    OutgoingTransfer,
    RemoteInstance,
    TransferBatch,
)
from librarian_dagster.services import clones, clones_run, outbox, outbox_delivery
from librarian_dagster.services.clones import NO_COPY
from librarian_dagster.services.clones_settle import reconcile, stale_transfers
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.movers import build_movers
from librarian_dagster.services.peers import PeerAccess
from librarian_dagster.states import BatchStatus, TransferStatus
from librarian_dagster.wire.clones import CLONES_COMPLETE, CLONES_STAGED
from tests.clone_helpers import befriend_both, clone_sites, links_for, pump
from tests.test_clones import count, upload


def test_a_tick_reads_a_bounded_slice_and_the_mark_passes_only_what_was_batched(
    tmp_path: Path,
) -> None:
    with clone_sites(
        tmp_path,
        ["site-a", "site-b"],
        batch_max=2,
        batch_min=2,
        max_batches_per_tick=2,
        batch_max_wait_seconds=3600,
    ) as sites:
        a = sites["site-a"]
        befriend_both(a, sites["site-b"])
        upload(a, tmp_path, 7)
        with a.catalogue.session() as session:
            ids = session.scalars(select(File.id).order_by(File.id)).all()
        formed = clones.form_batches(a.catalogue, a.settings)
        assert [batch.books for batch in formed] == [2, 2]  # 2 batches of 2 per tick
        with a.catalogue.session() as session:
            peer = session.scalars(select(Librarian)).one()
            assert peer.clone_high_water_file_id == ids[3]
        # Two batches wait for their peer already (max_batches_per_tick): none more ...
        assert clones.form_batches(a.catalogue, a.settings) == []
        with a.catalogue.session() as session:  # ... until the mover has them
            for batch in session.scalars(select(TransferBatch)):
                batch.status = BatchStatus.ONGOING
        assert [b.books for b in clones.form_batches(a.catalogue, a.settings)] == [2]
        with a.catalogue.session() as session:  # one book left: it waits for a full batch
            assert session.scalars(select(Librarian)).one().clone_high_water_file_id == ids[5]
        assert clones.form_batches(a.catalogue, a.settings) == []
        assert count(a, OutgoingTransfer) == 6


def test_a_book_with_no_copy_in_service_waits_and_goes_once_repaired(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], retry_backoff_max_seconds=3600) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 2)
        with a.catalogue.session() as session:
            bad = session.scalar(select(File).where(File.name == names[0]))
            assert bad is not None
            session.scalars(
                select(Instance).where(Instance.file_id == bad.id)
            ).one().available = False
        pump(sites)
        with a.catalogue.session() as session:
            waiting = session.scalars(
                select(OutgoingTransfer).where(OutgoingTransfer.file_id == bad.id)
            ).one()
            assert waiting.status == TransferStatus.INITIATED and waiting.batch_id is None
            assert waiting.failure_reason == NO_COPY and waiting.attempts == 0
            assert waiting.next_attempt_at > datetime.now(UTC) + timedelta(minutes=1)
        assert count(b, File) == 1  # the other went; the mark passed the bad one
        with a.catalogue.session() as session:  # repaired, and its wait over
            session.scalars(
                select(Instance).where(Instance.file_id == bad.id)
            ).one().available = True
            session.get(OutgoingTransfer, waiting.id).next_attempt_at = datetime.now(UTC)  # type: ignore[union-attr]
        pump(sites)
        assert count(b, File) == 2 and count(a, RemoteInstance) == 2


class Recorder:
    """A peer link that records what is posted, and refuses some routes as told."""

    def __init__(self, refuse: dict[str, int] | None = None) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.refuse = refuse or {}

    def __call__(self, access: PeerAccess) -> Recorder:
        return self

    def post(self, route: str, payload: dict[str, Any]) -> None:
        self.posts.append((route, payload))
        status = self.refuse.get(route)
        if status == 400 and len(payload.get("transfer_ids", [])) > 1:
            raise PeerCallFailed("site-b: one bad id in there", 400)
        if status and status != 400:
            raise PeerCallFailed("site-b: refused", status)
        if status == 400 and payload.get("transfer_ids") == [13]:
            raise PeerCallFailed("site-b: no such transfer 13", 404)

    def close(self) -> None:
        pass


def test_callbacks_to_one_peer_go_merged_and_a_refused_merge_is_split(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a = sites["site-a"]
        befriend_both(a, sites["site-b"])
        peer_id = a.peer_id("site-b")
        with a.catalogue.session() as session:
            for transfer_id in (11, 12):
                outbox.enqueue(session, peer_id, CLONES_STAGED, {"transfer_ids": [transfer_id]})
            for transfer_id in (21, 22, 23):
                outbox.enqueue(
                    session,
                    peer_id,
                    CLONES_COMPLETE,
                    {"transfers": [{"transfer_id": transfer_id, "store": "main"}]},
                )
        link = Recorder()
        report = outbox_delivery.deliver(a.catalogue, a.settings, link)
        assert report.delivered == 5 and len(link.posts) == 2
        assert (CLONES_STAGED, {"transfer_ids": [11, 12]}) in link.posts
        complete = next(p for r, p in link.posts if r == CLONES_COMPLETE)
        assert [t["transfer_id"] for t in complete["transfers"]] == [21, 22, 23]
        # A merged request refused as a whole is split: one bad row holds up no other.
        with a.catalogue.session() as session:
            for transfer_id in (13, 14):
                outbox.enqueue(session, peer_id, CLONES_STAGED, {"transfer_ids": [transfer_id]})
        link = Recorder(refuse={CLONES_STAGED: 400})
        report = outbox_delivery.deliver(a.catalogue, a.settings, link)
        assert report.delivered == 1 and report.failed == 1
        with a.catalogue.session() as session:
            left = session.scalars(
                select(CallbackOutbox).where(CallbackOutbox.delivered_at.is_(None))
            ).one()
            assert left.payload == {"transfer_ids": [13]} and left.attempts == 1
            assert "no such transfer 13" in (left.last_error or "")
            assert session.scalars(select(Librarian)).one().last_error is not None


def test_books_never_confirmed_are_asked_about(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], stale_after_hours=1) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 3)
        pump(sites)
        with a.catalogue.session() as session:  # as if b's callbacks had been lost for days
            rows = session.scalars(select(OutgoingTransfer).order_by(OutgoingTransfer.id)).all()
            for row in rows:
                row.status = TransferStatus.STAGED
                row.updated_at = datetime.now(UTC) - timedelta(days=2)
            session.execute(RemoteInstance.__table__.delete())
        with b.catalogue.session() as session:  # ... and one of them never arrived at all
            session.execute(File.__table__.delete().where(File.__table__.c.name == names[1]))
        with a.catalogue.session() as session:
            stale = stale_transfers(session, a.settings, limit=100)
        assert list(stale) == [a.peer_id("site-b")]
        outcome = reconcile(
            a.catalogue,
            a.settings,
            a.peer_id("site-b"),
            stale[a.peer_id("site-b")],
            links_for(sites),
        )
        assert sorted(outcome.held) == [names[0], names[2]] and outcome.resent == [names[1]]
        with a.catalogue.session() as session:
            states = {
                row.file.name: row.status for row in session.scalars(select(OutgoingTransfer))
            }
            assert states[names[0]] == states[names[2]] == TransferStatus.STORED
            assert states[names[1]] == TransferStatus.INITIATED
        assert count(a, RemoteInstance) == 2
        assert count(a, TransferBatch) == 1


class StalledMover:
    """A mover whose tasks never finish and say why (Globus INACTIVE: credentials expired)."""

    name = "local"

    def new_submission_id(self) -> str:
        return "s" * 32

    def address(self, path: str) -> str:
        return str(path)

    def submit(self, items, *, label, submission_id, endpoint=None) -> str:  # type: ignore[no-untyped-def]
        self.items = list(items)
        return "task-1"

    def status(self, task_id: str):  # type: ignore[no-untyped-def]
        from librarian_dagster.storage.movers.protocol import TaskReport, TaskStatus

        return TaskReport(task_id, TaskStatus.STALLED, fault="credentials expired")

    def cancel(self, task_id: str) -> None:
        pass


def test_a_stalled_task_is_one_operator_event_and_slots_are_never_exceeded(
    tmp_path: Path,
) -> None:
    from librarian_dagster.catalogue.models import Event
    from librarian_dagster.services.clones_schedule import mover_slots

    with clone_sites(tmp_path, ["site-a", "site-b"], max_active_transfers=1, batch_max=1) as sites:
        a = sites["site-a"]
        befriend_both(a, sites["site-b"])
        upload(a, tmp_path, 2)
        formed = clones.form_batches(a.catalogue, a.settings)
        assert len(formed) == 1  # one slot: one batch formed, the other book waits
        mover = StalledMover()
        links = links_for(sites)
        first = clones_run.run_batch(
            a.catalogue, a.settings, formed[0].batch_id, links=links, movers={"local": mover}
        )
        assert first.step == "submitted"
        with a.catalogue.session() as session:
            assert mover_slots(session, a.settings)["local"] == 0
        assert clones.form_batches(a.catalogue, a.settings) == []  # no slot, no new batch
        for _ in range(3):  # polled three times: stalled, one event
            moving = clones_run.run_batch(
                a.catalogue, a.settings, formed[0].batch_id, links=links, movers={"local": mover}
            )
            assert moving.step == "moving" and moving.fault == "credentials expired"
        with a.catalogue.session() as session:
            stalls = session.scalars(select(Event).where(Event.kind == "mover_stalled")).all()
            assert len(stalls) == 1 and "credentials expired" in stalls[0].message


def test_a_task_that_ends_soon_is_settled_by_the_run_that_submitted_it(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], settle_wait_seconds=30) as sites:
        a = sites["site-a"]
        befriend_both(a, sites["site-b"])
        upload(a, tmp_path, 3)
        (batch,) = clones.form_batches(a.catalogue, a.settings)
        outcome = clones_run.run_batch(
            a.catalogue,
            a.settings,
            batch.batch_id,
            links=links_for(sites),
            movers=build_movers(a.settings),
        )
        assert outcome.step == "settled" and len(outcome.arrived) == 3
        assert outcome.task_id and outcome.callbacks  # /clones/staged owed, delivered by the job
        with a.catalogue.session() as session:
            assert {r.status for r in session.scalars(select(OutgoingTransfer))} == {
                TransferStatus.STAGED
            }
