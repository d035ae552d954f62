"""The ``librarian`` command: init (idempotent), accounts, stores, one-line errors."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.cli.main import app
from librarian_dagster.services import accounts
from librarian_dagster.settings import LibrarianSettings

runner = CliRunner()


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings], monkeypatch: pytest.MonkeyPatch
) -> LibrarianSettings:
    settings = make_settings()
    assert settings.config_file is not None
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(settings.config_file))
    monkeypatch.delenv("LIBRARIAN_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("LIBRARIAN_SECRET_KEY", raising=False)
    return settings


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_init_is_idempotent_and_prints_the_password_once(site: LibrarianSettings) -> None:
    first = invoke("init")
    assert first.exit_code == 0, first.output
    assert "created user admin with password" in first.output
    password = first.output.split("with password ")[1].split()[0]
    key = site.secret_key_file
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key_bytes = key.read_bytes()
    assert (site.stores[0].root / "staging").is_dir() and (site.stores[0].root / "store").is_dir()
    assert (site.dagster_home / "dagster.yaml").is_file()

    second = invoke("init")
    assert second.exit_code == 0, second.output
    assert "password" not in second.output
    assert key.read_bytes() == key_bytes
    catalogue = get_catalogue(site.catalogue_url)
    with catalogue.session() as session:
        hasher = accounts.password_hasher(site.security)
        assert accounts.verify_password(session, hasher, "admin", password) is not None
        assert [u.name for u in accounts.list_users(session)] == ["admin"]


def test_init_takes_the_admin_password_from_env(
    site: LibrarianSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBRARIAN_ADMIN_PASSWORD", "chosen-password")
    result = invoke("init")
    assert result.exit_code == 0 and "chosen-password" not in result.output
    with get_catalogue(site.catalogue_url).session() as session:
        hasher = accounts.password_hasher(site.security)
        assert accounts.verify_password(session, hasher, "admin", "chosen-password")


def test_user_commands(site: LibrarianSettings) -> None:
    assert invoke("init").exit_code == 0
    created = invoke("user", "create", "alice", "--level", "read_append", "--password", "password1")
    assert created.exit_code == 0, created.output
    listing = invoke("user", "list")
    assert "alice" in listing.output and "read_append" in listing.output
    prompted = invoke("user", "password", "alice", input="password2\npassword2\n")
    assert prompted.exit_code == 0, prompted.output
    with get_catalogue(site.catalogue_url).session() as session:
        hasher = accounts.password_hasher(site.security)
        assert accounts.verify_password(session, hasher, "alice", "password2")
    assert invoke("user", "delete", "alice", "--yes").exit_code == 0
    assert "alice" not in invoke("user", "list").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("user", "create", "alice", "--password", "short"), "password must be"),
        (("user", "create", "bad name", "--password", "password1"), "invalid user name"),
        (("user", "create", "admin", "--password", "password1"), "already exists"),
        (("user", "delete", "nobody", "--yes"), "no user named 'nobody'"),
        (("user", "delete", "admin", "--yes"), "last admin"),
        (("store", "disable", "nope"), "no store named 'nope'"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    site: LibrarianSettings, args: tuple[str, ...], message: str
) -> None:
    assert invoke("init").exit_code == 0
    result = invoke(*args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_bad_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "librarian.toml"
    config.write_text('[[stores]]\nname = "x"\nkind = "tape"\nroot = "r"\n')
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(config))
    result = invoke("init")
    assert result.exit_code == 1
    assert "stores.0.kind" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / ".librarian").exists()


def _store_json() -> dict[str, dict[str, object]]:
    listing = invoke("store", "list", "--json")
    assert listing.exit_code == 0, listing.output
    return {store["name"]: store for store in json.loads(listing.output)}


def test_store_list_and_toggle(site: LibrarianSettings) -> None:
    assert invoke("init").exit_code == 0
    assert "main" in invoke("store", "list").output
    assert _store_json()["main"]["enabled"] is True
    assert invoke("store", "disable", "main").exit_code == 0
    assert _store_json()["main"]["enabled"] is False
    # A re-init (config sync) keeps the operator's choice.
    assert invoke("init").exit_code == 0
    main = _store_json()["main"]
    assert main["enabled"] is False and main["kind"] == "local" and main["state"] is None
    assert main["books"] == 0 and main["problem"] is None
    assert isinstance(main["free_bytes"], int) and isinstance(main["used_bytes"], int)
    assert invoke("store", "enable", "main").exit_code == 0
    assert _store_json()["main"]["enabled"] is True


def test_help_lists_the_pinned_commands() -> None:
    result = invoke("--help")
    for command in ("init", "serve", "user", "store"):
        assert command in result.output
