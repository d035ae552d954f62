"""Repairing a corrupt copy from a peer's good one, through the clone pipeline.

Two librarians in one process (``tests.clone_helpers``: real catalogues, stores, API and
``LocalMover``); ``pump`` does what the clone sensors and runs would. b's copy rots, b's
integrity pass records it, b asks a (whose copy verifies now) to send it again, and the
bad copy is replaced only once the new one verified.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.models import CorruptFile, Event, Instance
from librarian_dagster.services.integrity import Budget, verify_instances
from librarian_dagster.services.integrity_guard import GuardPolicy, trip
from librarian_dagster.services.integrity_repair import request_repairs
from librarian_dagster.states import CorruptionStatus
from librarian_dagster.storage.checksums import Checksum, hash_path
from librarian_dagster.storage.quarantine import QUARANTINE_DIRNAME
from tests.clone_helpers import PEER_PASSWORD, CloneSite, links_for, pump
from tests.test_clones import pair, upload  # noqa: F401 (the fixture)
from tests.test_validate import cloned, rot

POLICY = GuardPolicy()


def find_bad(site: CloneSite) -> None:
    verify_instances(
        site.catalogue,
        site.stores,
        budget=Budget(max_books=100),
        settings=site.settings,
        policy=POLICY,
    )


def record_of(site: CloneSite, name: str) -> CorruptFile:
    with site.catalogue.session() as session:
        (record,) = [
            row for row in session.scalars(select(CorruptFile)).all() if row.file.name == name
        ]
        session.expunge(record)
        return record


def test_a_rotten_copy_is_replaced_by_the_peers_verified_copy(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    names = cloned(pair, tmp_path, 3)
    victim = names[2]  # a directory book
    rot(b, victim)
    find_bad(b)
    assert record_of(b, victim).status == CorruptionStatus.DETECTED

    report = request_repairs(b.catalogue, b.settings, links_for(pair))
    assert report.requested == [(victim, "site-a")] and not report.lost
    assert record_of(b, victim).status == CorruptionStatus.REFETCHING
    pump(pair)

    record = record_of(b, victim)
    assert record.status == CorruptionStatus.REPAIRED and "site-a" in (record.resolved_by or "")
    with b.catalogue.session() as session:
        instance = session.scalars(
            select(Instance).join(Instance.file).where(Instance.file.has(name=victim))
        ).one()
        assert instance.available
        expected = Checksum.parse(instance.file.checksum)
        events = session.scalars(select(Event).where(Event.subject == victim)).all()
        mismatch = [event for event in events if event.kind == "copy_mismatch"]
        assert mismatch and all(event.resolved for event in mismatch)
    assert hash_path(b.store.path_for(victim), expected.algorithm) == expected
    quarantine = b.store.root / QUARANTINE_DIRNAME
    assert not quarantine.exists() or list(quarantine.iterdir()) == []
    # The next pass reads it good; nothing is open.
    later = verify_instances(
        b.catalogue, b.stores, names=[victim], settings=b.settings, policy=POLICY
    )
    assert later.passed and later.unresolved == 0
    # a was never asked to hold anything new, and its own copy is untouched.
    assert hash_path(a.store.path_for(victim), expected.algorithm) == expected


def test_no_repair_is_asked_for_on_a_guarded_store(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    b = pair["site-b"]
    (name,) = cloned(pair, tmp_path, 1)
    rot(b, name)
    find_bad(b)
    with b.catalogue.session() as session:
        trip(session, "main", "test: storage misbehaving")
    report = request_repairs(b.catalogue, b.settings, links_for(pair))
    assert report.requested == [] and report.lost == []
    assert record_of(b, name).status == CorruptionStatus.DETECTED
    pump(pair)
    assert record_of(b, name).status == CorruptionStatus.DETECTED
    assert b.store.path_for(name).exists()


def test_a_peer_down_waits_and_a_peer_with_a_bad_copy_leaves_it_lost(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    (name,) = cloned(pair, tmp_path, 1)
    rot(b, name)
    find_bad(b)
    down = links_for(pair, down=frozenset({"site-a"}))
    report = request_repairs(b.catalogue, b.settings, down)
    assert report.waiting and "unreachable" in report.waiting[0][1]
    record = record_of(b, name)
    # Not counted against its tries (nobody was asked), asked again after RETRY_AFTER.
    assert record.status == CorruptionStatus.DETECTED and record.attempts == 0
    assert record.requested_at is not None
    assert request_repairs(b.catalogue, b.settings, links_for(pair)).requested == []

    with b.catalogue.session() as session:  # pretend the back-off is over
        row = session.get(CorruptFile, record.id)
        assert row is not None
        row.requested_at = row.requested_at.replace(year=2000)
    rot(a, name)  # a's copy has rotted too: nobody can repair it
    report = request_repairs(b.catalogue, b.settings, links_for(pair))
    assert report.lost and "does not verify" in report.lost[0][1]
    assert record_of(b, name).status == CorruptionStatus.LOST
    assert b.store.path_for(name).exists() and a.store.path_for(name).exists()


def test_resend_answers_only_for_books_the_caller_held(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    a = pair["site-a"]
    (name,) = cloned(pair, tmp_path, 1)
    (other,) = upload(a, tmp_path, 1, prefix="only/at/a")
    as_b = ("site-b", PEER_PASSWORD)
    answer = a.client.post(
        "/api/v2/clones/resend", json={"names": [name, other, "no/such"]}, auth=as_b
    )
    assert answer.status_code == 200, answer.text
    assert [item["answer"] for item in answer.json()["items"]] == [
        "queued",
        "not_yours",
        "unknown",
    ]
    again = a.client.post("/api/v2/clones/resend", json={"names": [name]}, auth=as_b).json()
    assert again["items"][0]["answer"] == "on_its_way"
    assert a.client.post("/api/v2/clones/resend", json={"names": []}, auth=as_b).status_code == 400
    admin = a.client.post(
        "/api/v2/clones/resend", json={"names": [name]}, auth=("admin", "admin-password")
    )
    assert admin.status_code == 403  # an admin is not a peer: it held nothing


def test_a_repair_never_moves_a_namespace_or_a_copy_an_operator_kept(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    from librarian_dagster.catalogue.models import IncomingTransfer
    from librarian_dagster.services import corrupt
    from librarian_dagster.states import TransferStatus
    from tests.clone_helpers import deliver, step_receiver, step_sender

    b = pair["site-b"]
    kept, spaced = cloned(pair, tmp_path, 2)[:2]
    for name in (kept, spaced):
        rot(b, name)
    # Two of two would be a burst: read without the guard, to get two repairs going.
    verify_instances(b.catalogue, b.stores, budget=Budget(max_books=10), settings=b.settings)
    assert len(request_repairs(b.catalogue, b.settings, links_for(pair)).requested) == 2
    # The "file" one is now a namespace holding another book's bytes (it is not the book).
    spaced_path = b.store.path_for(spaced)
    spaced_path.chmod(0o644)
    spaced_path.unlink()
    spaced_path.mkdir()
    (spaced_path / "other.dat").write_bytes(b"somebody else's")
    for _ in range(5):  # the good copies arrive at b's staging
        step_sender(pair["site-a"], pair)
        deliver(pair["site-a"], pair)
    with b.catalogue.session() as session:  # an operator keeps the other bad copy
        record = corrupt.open_record(
            session, session.get(CorruptFile, record_of(b, kept).id).instance_id
        )
        assert record is not None
        corrupt.dismiss(session, record.id, "operator", "keep it for the post-mortem")
    step_receiver(b)
    with b.catalogue.session() as session:
        failed = {
            t.name: t.failure_reason
            for t in session.scalars(select(IncomingTransfer))
            if t.status == TransferStatus.FAILED
        }
    assert "not the book" in failed[spaced] and "already exists" in failed[kept]
    assert (spaced_path / "other.dat").read_bytes() == b"somebody else's"
    assert b.store.path_for(kept).read_bytes() == b"bit rot"
    quarantine = b.store.root / QUARANTINE_DIRNAME
    assert not quarantine.exists() or list(quarantine.iterdir()) == []
    assert record_of(b, spaced).status == CorruptionStatus.REFETCHING
