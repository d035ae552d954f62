"""Cloning when things go wrong: held and conflicting books, bad copies on either side,
mover faults and their retry budget, repeated or stale callbacks, crashes mid-batch."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.models import (
    Event,
    File,
    IncomingTransfer,
    OutgoingTransfer,
    RemoteInstance,
    TransferBatch,
)
from librarian_dagster.services import clones, clones_callbacks, clones_run
from librarian_dagster.services.movers import build_movers
from librarian_dagster.states import BatchStatus, TransferStatus
from librarian_dagster.wire import CloneComplete, FailedClone
from tests.clone_helpers import (
    befriend_both,
    clone_sites,
    deliver,
    links_for,
    pump,
    step_receiver,
    step_sender,
)
from tests.test_clones import count, sent_items, upload


def events(site, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    with site.catalogue.session() as session:
        return list(session.scalars(select(Event.message).where(Event.kind == kind)))


def outgoing(site):  # type: ignore[no-untyped-def]
    with site.catalogue.session() as session:
        return {
            row.file.name: (row.status, row.attempts, row.failure_reason)
            for row in session.scalars(select(OutgoingTransfer))
        }


def test_a_book_the_peer_holds_already_is_recorded_not_sent(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        source = tmp_path / "same.dat"
        source.write_bytes(b"the same bytes at both sites")
        from tests.ingest_helpers import Site

        for site in (a, b):
            helper = Site(site.settings, site.catalogue, site.stores)
            assert helper.ingest(helper.upload("2026/same.dat", source)).status == "stored"
        pump(sites)
        assert sent_items(a) == [] and sent_items(b) == []
        with a.catalogue.session() as session:
            (remote,) = session.scalars(select(RemoteInstance))
            assert remote.librarian.name == "site-b" and remote.file.name == "2026/same.dat"
        assert outgoing(a) == {"2026/same.dat": (TransferStatus.STORED, 0, None)}


def test_another_book_under_the_same_name_is_a_conflict_never_overwritten(
    tmp_path: Path,
) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        from tests.ingest_helpers import Site

        for site, content in ((a, b"a's book"), (b, b"b's own book")):
            source = tmp_path / f"{site.name}.dat"
            source.write_bytes(content)
            helper = Site(site.settings, site.catalogue, site.stores)
            assert helper.ingest(helper.upload("2026/name.dat", source)).status == "stored"
        pump(sites)
        assert (b.store.store_dir / "2026/name.dat").read_bytes() == b"b's own book"
        assert sent_items(a) == []
        status, _, reason = outgoing(a)["2026/name.dat"]
        assert status == TransferStatus.FAILED and "conflict" in (reason or "")
        assert events(a, "clone_conflict") and events(b, "clone_conflict")
        pump(sites)  # failed for good: not tried again by itself
        assert outgoing(a)["2026/name.dat"][0] == TransferStatus.FAILED


def test_a_bad_copy_at_the_sender_is_not_delivered_and_fails_after_its_attempts(
    tmp_path: Path,
) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], max_attempts=2) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 2)
        bad = a.store.store_dir / names[0]
        bad.chmod(0o644)
        bad.write_bytes(b"rotten" + bad.read_bytes()[6:])  # same size, other bytes
        pump(sites)
        status, attempts, reason = outgoing(a)[names[0]]
        assert status == TransferStatus.FAILED and attempts == 2
        assert "does not match the catalogue" in (reason or "")
        assert outgoing(a)[names[1]][0] == TransferStatus.STORED
        assert events(a, "clone_failed")
        with b.catalogue.session() as session:
            rows = {row.name: row for row in session.scalars(select(IncomingTransfer))}
            assert rows[names[0]].status == TransferStatus.FAILED  # a told b it gave up
            assert "gave up" in (rows[names[0]].failure_reason or "")
            assert session.scalar(select(File.id).where(File.name == names[0])) is None
        assert list(b.store.staging_dir.iterdir()) == []


def test_a_book_damaged_in_the_peers_staging_fails_there_and_is_sent_again(
    tmp_path: Path,
) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 3)
        step_sender(a, sites)  # stage, submit (the mover delivers)
        step_sender(a, sites)  # settle: b is owed "staged"
        deliver(a, sites)
        with b.catalogue.session() as session:
            staged = session.scalar(
                select(IncomingTransfer).where(IncomingTransfer.name == names[0])
            )
            assert staged is not None and staged.status == TransferStatus.STAGED
            path = Path(staged.staging_path)
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
        step_receiver(b)  # the other two are stored; this one fails, a is owed /fail
        deliver(b, sites)
        status, attempts, reason = outgoing(a)[names[0]]
        assert status == TransferStatus.INITIATED and attempts == 1
        assert "checksum mismatch" in (reason or "")
        assert outgoing(a)[names[1]][0] == outgoing(a)[names[2]][0] == TransferStatus.STORED
        pump(sites)
        assert outgoing(a)[names[0]][0] == TransferStatus.STORED
        with b.catalogue.session() as session:
            assert sorted(session.scalars(select(File.name))) == names
        # Sent twice because the first copy was damaged; every other book once.
        assert sorted(sent_items(a)).count(sent_items(a)[0]) <= 2 and len(sent_items(a)) == 4


def test_callbacks_are_idempotent_and_stale_failures_are_ignored(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        (name,) = upload(a, tmp_path, 1)
        pump(sites)
        with a.catalogue.session() as session:
            row = session.scalars(select(OutgoingTransfer)).one()
            checksum = row.file.checksum
            remote_id = row.remote_transfer_id
            peer = row.librarian
        complete = CloneComplete(
            transfers=[{"transfer_id": row.id, "store": "main", "checksum": checksum}]
        )
        with a.catalogue.session() as session:
            (ack,) = clones_callbacks.complete_clones(session, peer, complete).items
        assert ack.result == "already" and count(a, RemoteInstance) == 1
        stale = [FailedClone(transfer_id=row.id, reason="late", remote_transfer_id=remote_id)]
        with a.catalogue.session() as session:
            (ack,) = clones_callbacks.fail_outgoing(session, a.settings, peer, stale).items
        assert ack.result == "already" and outgoing(a)[name][0] == TransferStatus.STORED
        wrong = CloneComplete(
            transfers=[{"transfer_id": row.id, "store": "other", "checksum": "md5:" + "0" * 32}]
        )
        with a.catalogue.session() as session:
            (ack,) = clones_callbacks.complete_clones(session, peer, wrong).items
        assert ack.result == "ignored" and count(a, RemoteInstance) == 1
        assert events(a, "clone_checksum_differs")


def test_a_run_killed_after_recording_the_submission_id_does_not_send_twice(
    tmp_path: Path,
) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 4)
        batches = clones.form_batches(a.catalogue, a.settings)
        (batch,) = batches
        links, movers = links_for(sites), build_movers(a.settings)
        clones_run.run_batch(a.catalogue, a.settings, batch.batch_id, links=links, movers=movers)
        with a.catalogue.session() as session:
            row = session.get(TransferBatch, batch.batch_id)
            assert row is not None and row.status == BatchStatus.ONGOING
            # As if the run died between the submit and the record of its task id:
            row.status, task_id, row.task_id = BatchStatus.SUBMITTING, row.task_id, None
            for transfer in row.transfers:
                transfer.status = TransferStatus.INITIATED
        clones_run.run_batch(a.catalogue, a.settings, batch.batch_id, links=links, movers=movers)
        with a.catalogue.session() as session:
            row = session.get(TransferBatch, batch.batch_id)
            assert row is not None and row.task_id == task_id
        assert a.mover.task_ids() == [task_id] and len(sent_items(a)) == 4
        pump(sites)
        assert count(b, File) == 4 and len(sent_items(a)) == 4


def test_a_paused_peer_gets_no_new_batch_but_callbacks_flow(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 2)
        step_sender(a, sites)
        step_sender(a, sites)
        with a.catalogue.session() as session:
            a_peer = session.scalars(select(OutgoingTransfer)).first().librarian  # type: ignore[union-attr]
            a_peer.transfers_enabled = False
        upload(a, tmp_path, 1, prefix="2026/later")
        pump(sites)
        # The two in flight arrived (callbacks flowed while paused); the new one waits.
        assert count(b, File) == 2 and count(a, RemoteInstance) == 2
        with a.catalogue.session() as session:
            session.scalars(select(OutgoingTransfer)).first().librarian.transfers_enabled = True  # type: ignore[union-attr]
        pump(sites)
        assert count(b, File) == 3


def test_a_peer_that_is_down_costs_only_delay(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], retry_backoff_seconds=3600) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 2)
        down = frozenset({"site-b"})
        step_sender(a, sites, down)
        assert a.deferred and "connection refused" in a.deferred[-1]
        with a.catalogue.session() as session:
            batch = session.scalars(select(TransferBatch)).one()
            assert batch.status == BatchStatus.INITIATED and batch.attempts == 1
            assert batch.next_attempt_at is not None  # backed off: not asked every tick
            assert batch.librarian.last_error and batch.librarian.last_error_at is not None
            batch.next_attempt_at = None  # the back-off is over
        step_sender(a, sites, down)
        assert len(a.deferred) == 2  # still down: the same batch, nothing formed twice
        assert count(a, TransferBatch) == 1 and count(a, OutgoingTransfer) == 2
        with a.catalogue.session() as session:
            session.scalars(select(TransferBatch)).one().next_attempt_at = None
        pump(sites)
        assert count(b, File) == 2 and count(a, RemoteInstance) == 2
        with a.catalogue.session() as session:
            assert session.scalars(select(TransferBatch)).one().librarian.last_error is None


def test_callbacks_wait_for_a_peer_that_is_down(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 3)
        step_sender(a, sites)
        step_sender(a, sites)
        deliver(a, sites)
        step_receiver(b)  # stored at b: a is owed /clones/complete, but a is down
        report = deliver(b, sites, frozenset({"site-a"}))
        assert report.failed == 3 and report.delivered == 0  # three rows (one request)
        with b.catalogue.session() as session:
            owed = session.scalars(select(outbox_row_model())).all()
            assert all(row.attempts == 1 and row.delivered_at is None for row in owed)
        assert count(a, RemoteInstance) == 0
        with b.catalogue.session() as session:
            for row in session.scalars(select(outbox_row_model())):
                row.next_attempt_at = row.created_at  # the back-off is over
        report = deliver(b, sites)
        assert report.delivered == 3 and count(a, RemoteInstance) == 3


def outbox_row_model():  # type: ignore[no-untyped-def]
    from librarian_dagster.catalogue.models import CallbackOutbox

    return CallbackOutbox
