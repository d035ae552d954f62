"""Who may say what about a clone, and bad stage requests that must change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from librarian_dagster.catalogue.models import IncomingTransfer, OutgoingTransfer
from librarian_dagster.services import accounts
from librarian_dagster.states import UserLevel
from tests.clone_helpers import (
    PEER_PASSWORD,
    befriend_both,
    clone_sites,
    pump,
    step_sender,
)
from tests.test_clones import upload

CLONE_ROUTES = ["stage", "staged", "complete", "fail", "status"]


def post(site, user: str, route: str, body: object, password: str = PEER_PASSWORD):  # type: ignore[no-untyped-def]
    return site.client.post(f"/api/v2/clones/{route}", json=body, auth=(user, password))


def test_a_peer_may_speak_only_of_its_own_transfers(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b", "site-c"]) as sites:
        a, b, c = sites["site-a"], sites["site-b"], sites["site-c"]
        befriend_both(a, b)
        befriend_both(a, c)
        with a.catalogue.session() as session:  # a sends to c only: b is paused
            from librarian_dagster.services.peers import get_peer

            get_peer(session, "site-b").transfers_enabled = False
        upload(a, tmp_path, 1)
        step_sender(a, sites)
        with a.catalogue.session() as session:
            to_c = session.scalars(select(OutgoingTransfer)).one()
            checksum = to_c.file.checksum
        done = {"transfers": [{"transfer_id": to_c.id, "store": "main", "checksum": checksum}]}
        answer = post(a, "site-b", "complete", done)
        assert answer.status_code == 403 and "not sent to site-b" in answer.json()["detail"]
        failed = {"role": "destination", "transfers": [{"transfer_id": to_c.id, "reason": "x"}]}
        assert post(a, "site-b", "fail", failed).status_code == 403
        unknown = {"transfers": [{"transfer_id": 999999, "store": "main", "checksum": checksum}]}
        assert post(a, "site-b", "complete", unknown).status_code == 404
        # c's incoming transfer came from a: b may not say its bytes are staged.
        with c.catalogue.session() as session:
            incoming = session.scalars(select(IncomingTransfer)).one()
        befriend_both(b, c)
        assert post(c, "site-b", "staged", {"transfer_ids": [incoming.id]}).status_code == 403
        # Nothing of that changed anything: the book still reaches c, and only c.
        pump(sites)
        with a.catalogue.session() as session:
            row = session.get(OutgoingTransfer, to_c.id)
            assert row is not None and row.status.value == "stored"
            assert [r.librarian.name for r in row.file.remote_instances] == ["site-c"]


@pytest.mark.parametrize("level", [UserLevel.READ_ONLY, UserLevel.READ_APPEND])
def test_users_who_are_not_peers_cannot_call_any_clone_route(
    tmp_path: Path, level: UserLevel
) -> None:
    with clone_sites(tmp_path, ["site-a"]) as sites:
        a = sites["site-a"]
        with a.catalogue.session() as session:
            accounts.create_user(
                session,
                accounts.password_hasher(a.settings.security),
                "alice",
                "pw-alice-1",
                level,
            )
        for route in CLONE_ROUTES:
            answer = post(a, "alice", route, {}, password="pw-alice-1")
            assert answer.status_code == 403, (route, answer.text)


def stage_item(transfer_id: int, name: str, size: int = 10, checksum: str | None = None) -> dict:
    return {
        "transfer_id": transfer_id,
        "name": name,
        "size": size,
        "checksum": checksum or "xxh3_128:" + "0" * 32,
        "uploader": "alice",
        "source": "site-a",
        "source_store": "main",
    }


@pytest.mark.parametrize(
    ("items", "status", "words"),
    [
        ([stage_item(1, "../escape")], 400, "invalid name"),
        ([stage_item(1, "/abs")], 400, "invalid name"),
        ([stage_item(1, "ok"), stage_item(2, "ok")], 400, "twice"),
        ([stage_item(1, "a"), stage_item(1, "b")], 400, "twice"),
        ([stage_item(1, "ok", checksum="nope")], 400, "checksum"),
        ([stage_item(1, "ok", size=-1)], 400, ""),
        ([stage_item(1, "ok", size=2**62)], 507, "room"),
    ],
)
def test_a_bad_stage_request_changes_nothing(
    tmp_path: Path, items: list[dict], status: int, words: str
) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        good = [stage_item(100 + i, f"fine/{i}") for i in range(3)]
        answer = post(b, "site-a", "stage", {"mover": "local", "items": good + items})
        assert answer.status_code == status, answer.text
        assert words in answer.json()["detail"]
        with b.catalogue.session() as session:
            assert session.scalar(select(func.count()).select_from(IncomingTransfer)) == 0
        assert list(b.store.staging_dir.iterdir()) == []


def test_a_repeated_stage_request_answers_the_same(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        b = sites["site-b"]
        befriend_both(sites["site-a"], b)
        body = {"mover": "local", "items": [stage_item(7, "2026/x"), stage_item(8, "2026/y")]}
        first = post(b, "site-a", "stage", body).json()
        again = post(b, "site-a", "stage", body).json()
        assert first == again and {i["answer"] for i in first["items"]} == {"staged"}
        with b.catalogue.session() as session:
            assert session.scalar(select(func.count()).select_from(IncomingTransfer)) == 2
        assert len(list(b.store.staging_dir.iterdir())) == 2
        globus = post(b, "site-a", "stage", {**body, "mover": "globus"})
        assert globus.status_code == 409 and "Globus" in globus.json()["detail"]
