"""``POST /files/{name}/validate`` and ``librarian validate NAME``: every copy, here and at
every peer, re-read now; a peer that cannot be asked is a row saying so, never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from librarian_dagster.catalogue.models import CorruptFile, RemoteInstance
from librarian_dagster.cli import integrity_cmd
from librarian_dagster.cli.main import app as cli
from librarian_dagster.services.integrity_validate import validate_everywhere
from librarian_dagster.services.peers import PeerAccess, PeerLinks
from tests.clone_helpers import PEER_PASSWORD, CloneSite, links_for, pump
from tests.test_clones import pair, upload  # noqa: F401 (the fixture)

ADMIN = ("admin", "admin-password")


def cloned(pair: dict[str, CloneSite], tmp_path: Path, count: int = 2) -> list[str]:  # noqa: F811
    names = upload(pair["site-a"], tmp_path, count)
    pump(pair)
    with pair["site-a"].catalogue.session() as session:
        assert len(session.scalars(select(RemoteInstance)).all()) == count
    return names


def rot(site: CloneSite, name: str) -> None:
    path = site.store.path_for(name)
    victim = path if path.is_file() else next(p for p in sorted(path.rglob("*")) if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")


def test_a_peer_validates_its_copies_over_the_api(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    b = pair["site-b"]
    good, bad = cloned(pair, tmp_path)
    rot(b, bad)
    as_a = ("site-a", PEER_PASSWORD)
    answer = b.client.post(f"/api/v2/files/{good}/validate", auth=as_a)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (copy,) = body["copies"]
    assert body["librarian"] == "site-b" and body["name"] == good
    assert copy["matches"] and copy["checksum"] == body["checksum"] and copy["store"] == "main"
    damaged = b.client.post(f"/api/v2/files/{bad}/validate", auth=as_a).json()
    (copy,) = damaged["copies"]
    assert not copy["matches"] and copy["checksum"] != damaged["checksum"]
    assert copy["problem"] == "corrupt" and "/" not in copy["problem"]
    with b.catalogue.session() as session:  # recorded as a pass would record it
        (record,) = session.scalars(select(CorruptFile)).all()
        assert record.file.name == bad
    # Asked again: out of service but known bad, so read again, still bad.
    again = b.client.post(f"/api/v2/files/{bad}/validate", auth=as_a).json()
    assert not again["copies"][0]["matches"]

    assert b.client.post("/api/v2/files/nope/validate", auth=as_a).status_code == 404
    assert b.client.post(f"/api/v2/files/{good}", auth=as_a).status_code == 404
    assert b.client.post(f"/api/v2/files/{good}/validate").status_code == 401
    # A callback account that is not a peer of b's may not make b read its disks.
    with b.catalogue.session() as session:
        from librarian_dagster.services import accounts
        from librarian_dagster.states import UserLevel

        accounts.create_user(
            session,
            accounts.password_hasher(b.settings.security),
            "stranger",
            PEER_PASSWORD,
            UserLevel.CALLBACK,
        )
    refused = b.client.post(f"/api/v2/files/{good}/validate", auth=("stranger", PEER_PASSWORD))
    assert refused.status_code == 403
    assert b.client.post(f"/api/v2/files/{good}/validate", auth=ADMIN).status_code == 200


def test_validate_everywhere_reports_each_copy_and_an_unreachable_peer(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    good, bad = cloned(pair, tmp_path)
    rot(b, bad)
    here, peers = validate_everywhere(a.catalogue, a.stores, a.settings, links_for(pair), good)
    assert [copy.matches for copy in here.copies] == [True]
    (peer,) = peers
    assert peer.peer == "site-b" and peer.verified_copies == 1
    with a.catalogue.session() as session:  # a notes when b verified its copy
        remote = session.scalars(select(RemoteInstance)).all()
        assert any(row.verified_at is not None and row.file.name == good for row in remote)

    _, peers = validate_everywhere(a.catalogue, a.stores, a.settings, links_for(pair), bad)
    assert peers[0].verified_copies == 0 and not peers[0].answer.copies[0].matches

    down = links_for(pair, down=frozenset({"site-b"}))
    _, peers = validate_everywhere(a.catalogue, a.stores, a.settings, down, good)
    assert peers[0].answer is None and "unreachable" in (peers[0].problem or "")
    assert "connection refused" in (peers[0].problem or "")


def test_the_cli_prints_every_copy_and_exits_1_unless_all_match(
    pair: dict[str, CloneSite],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    good, bad = cloned(pair, tmp_path)
    links = links_for(pair)

    def http_links(_timeout: float) -> PeerLinks:
        return links

    monkeypatch.setattr(integrity_cmd, "http_links", http_links)
    runner = CliRunner()
    config = ["--config", str(a.settings.config_file)]
    fine = runner.invoke(cli, [*config, "validate", good], terminal_width=200)
    assert fine.exit_code == 0, fine.output
    assert "site-a" in fine.output and "site-b" in fine.output and "NO" not in fine.output

    rot(b, bad)
    broken = runner.invoke(cli, [*config, "validate", bad], terminal_width=200)
    assert broken.exit_code == 1 and "NO" in broken.output and "corrupt" in broken.output

    def unreachable(access: PeerAccess) -> object:
        return links_for(pair, down=frozenset({"site-b"}))(access)

    monkeypatch.setattr(integrity_cmd, "http_links", lambda _timeout: unreachable)
    away = runner.invoke(cli, [*config, "validate", good], terminal_width=200)
    assert away.exit_code == 1 and "unreachable" in away.output

    missing = runner.invoke(cli, [*config, "validate", "no/such/book"])
    assert missing.exit_code != 0 and len(missing.output.strip().splitlines()) == 1
