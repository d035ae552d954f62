"""Peers through the API and the CLI: add (checked against the peer), list, pause, resume,
change, remove; the password is stored encrypted and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from librarian_dagster.catalogue.models import Librarian
from librarian_dagster.cli.main import app as cli
from librarian_dagster.services import accounts, peers
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import PeerCreate
from tests.clone_helpers import PEER_PASSWORD, clone_sites, links_for

ADMIN = ("admin", "admin-password")


def account_on(site, name: str, password: str = PEER_PASSWORD) -> None:  # type: ignore[no-untyped-def]
    with site.catalogue.session() as session:
        accounts.create_user(
            session,
            accounts.password_hasher(site.settings.security),
            name,
            password,
            UserLevel.CALLBACK,
        )


def body(b, **changes: object) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": "site-b",
        "url": b.url,
        "user": "site-a",
        "password": PEER_PASSWORD,
        "mover": "local",
        **changes,
    }


@pytest.fixture
def sites(tmp_path: Path):  # type: ignore[no-untyped-def]
    """a and b; b has an account for a (level callback); a knows nothing of b yet."""
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        account_on(sites["site-b"], "site-a")
        yield sites


def add(a, b, **changes):  # type: ignore[no-untyped-def]
    """Add b as a peer of a, checked through b's in-process API."""
    peer = peers.add_peer(
        a.catalogue, a.settings, PeerCreate(**body(b, **changes)), links=links_for({"b": b})
    )
    return peer.name


def test_the_account_route_says_who_the_caller_is(sites) -> None:  # type: ignore[no-untyped-def]
    b = sites["site-b"]
    answer = b.client.get("/api/v2/account", auth=("site-a", PEER_PASSWORD)).json()
    assert answer["name"] == "site-a" and answer["level"] == "callback"
    assert answer["librarian"] == "site-b"


def test_a_peer_is_checked_before_it_is_recorded(sites) -> None:  # type: ignore[no-untyped-def]
    a, b = sites["site-a"], sites["site-b"]
    from librarian_dagster.services.errors import InvalidRequest, PeerCallFailed

    with pytest.raises(PeerCallFailed, match="401"):
        add(a, b, password="wrong-password")
    with pytest.raises(InvalidRequest, match="calls itself 'site-b', not 'site-x'"):
        add(a, b, name="site-x")
    with a.catalogue.session() as session:
        assert session.scalars(select(Librarian)).all() == []
    assert add(a, b) == "site-b"
    with a.catalogue.session() as session:
        row = session.scalars(select(Librarian)).one()
        assert PEER_PASSWORD.encode() not in row.encrypted_password
        assert row.last_seen_at is not None and row.mover == "local"
    listed = a.client.get("/api/v2/peers", auth=ADMIN).json()["peers"]
    assert [p["name"] for p in listed] == ["site-b"] and "password" not in str(listed)


def test_the_api_manages_peers(sites) -> None:  # type: ignore[no-untyped-def]
    a, b = sites["site-a"], sites["site-b"]
    created = a.client.post(
        "/api/v2/peers", json=body(b, check=False, transfers_enabled=False), auth=ADMIN
    )
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["transfers_enabled"] is False and info["last_seen"] is None
    assert "password" not in info
    again = a.client.post("/api/v2/peers", json=body(b, check=False), auth=ADMIN)
    assert again.status_code == 409
    resumed = a.client.patch("/api/v2/peers/site-b", json={"transfers_enabled": True}, auth=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["transfers_enabled"] is True
    bad = a.client.post(
        "/api/v2/peers", json=body(b, name="site-c", url="ftp://x", check=False), auth=ADMIN
    )
    assert bad.status_code == 400 and "http" in bad.text
    own = a.client.post("/api/v2/peers", json=body(b, name="site-a", check=False), auth=ADMIN)
    assert own.status_code == 400 and "own name" in own.json()["detail"]
    globus = a.client.post(
        "/api/v2/peers", json=body(b, name="site-g", mover="globus", check=False), auth=ADMIN
    )
    assert globus.status_code == 503 and "[globus]" in globus.json()["detail"]
    assert a.client.delete("/api/v2/peers/site-b", auth=ADMIN).status_code == 204
    assert a.client.get("/api/v2/peers/site-b", auth=ADMIN).status_code == 404


def test_a_peer_the_catalogue_remembers_cannot_be_removed(tmp_path: Path) -> None:
    from tests.clone_helpers import befriend_both, pump
    from tests.test_clones import upload

    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 1)
        pump(sites)
        refused = a.client.delete("/api/v2/peers/site-b", auth=ADMIN)
        assert refused.status_code == 409 and "pause it instead" in refused.json()["detail"]
        info = a.client.get("/api/v2/peers/site-b", auth=ADMIN).json()
        assert info["books_held"] == 1 and info["books_in_flight"] == 0


def test_the_cli_adds_lists_pauses_and_removes_peers(
    sites,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    runner = CliRunner()
    config = ["--config", str(a.settings.config_file)]
    monkeypatch.setenv("B_PASSWORD", PEER_PASSWORD)
    import librarian_dagster.cli.peers_cmd as peers_cmd

    monkeypatch.setattr(peers_cmd, "http_links", lambda timeout: links_for({"b": b}))
    monkeypatch.setattr(peers_cmd, "reload_code_location", lambda settings: "not running")
    missing = runner.invoke(
        cli,
        [
            *config,
            "peer",
            "add",
            "site-b",
            "--url",
            b.url,
            "--user",
            "site-a",
            "--password-env",
            "NOT_SET_ANYWHERE",
        ],
    )
    assert missing.exit_code == 1 and "NOT_SET_ANYWHERE is not set" in missing.stderr
    added = runner.invoke(
        cli,
        [
            *config,
            "peer",
            "add",
            "site-b",
            "--url",
            b.url,
            "--user",
            "site-a",
            "--password-env",
            "B_PASSWORD",
        ],
    )
    assert added.exit_code == 0, added.stdout + added.stderr
    assert "added peer site-b" in added.stdout and PEER_PASSWORD not in added.stdout
    assert "did not reload" in added.stderr
    listed = runner.invoke(cli, [*config, "peer", "list", "--json"])
    assert listed.exit_code == 0 and '"transfers_enabled": true' in listed.stdout
    assert PEER_PASSWORD not in listed.stdout
    assert runner.invoke(cli, [*config, "peer", "pause", "site-b"]).exit_code == 0
    with a.catalogue.session() as session:
        assert not peers.get_peer(session, "site-b").transfers_enabled
    assert runner.invoke(cli, [*config, "peer", "resume", "site-b"]).exit_code == 0
    pinged = runner.invoke(cli, [*config, "peer", "ping", "site-b"])
    assert pinged.exit_code == 0 and "we are site-a (callback)" in pinged.stdout
    with b.catalogue.session() as session:  # b changes our password: ping says so
        accounts.set_password(
            session, accounts.password_hasher(b.settings.security), "site-a", "changed-pw-1"
        )
    failed = runner.invoke(cli, [*config, "peer", "ping", "site-b"])
    assert failed.exit_code == 1 and "401" in failed.stderr
    monkeypatch.setenv("B_PASSWORD", "changed-pw-1")
    changed = runner.invoke(cli, [*config, "peer", "set", "site-b", "--password-env", "B_PASSWORD"])
    assert changed.exit_code == 0
    assert runner.invoke(cli, [*config, "peer", "ping", "site-b"]).exit_code == 0
    removed = runner.invoke(cli, [*config, "peer", "remove", "site-b", "--yes"])
    assert removed.exit_code == 0 and "removed peer site-b" in removed.stdout
