"""Client settings: client.toml, password resolution and the lazy ``client_settings``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from librarian_dagster.client import (
    ClientConfigError,
    ConnectionInfo,
    LibrarianError,
    client_settings,
    load_client_settings,
)
from librarian_dagster.client.settings import LazyClientSettings

GOOD = """
[connections.site-a]
url = "https://a.example:8080"
user = "alice"
password_env = "SITE_A_PASSWORD"

[connections.local]
url = "http://127.0.0.1:8080"
user = "bob"
password = "literal-for-scripts"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(GOOD)
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(path))
    return path


def test_connections_from_toml(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_client_settings()
    assert set(settings.connections) == {"site-a", "local"}
    assert settings.config_file == config.resolve()
    site = settings.connection("site-a")
    assert (site.url, site.user, site.password_env) == (
        "https://a.example:8080",
        "alice",
        "SITE_A_PASSWORD",
    )
    monkeypatch.setenv("SITE_A_PASSWORD", "from-env")
    assert site.resolve_password() == "from-env"
    local = settings.connections["local"]
    assert local.resolve_password() == "literal-for-scripts"
    assert "literal-for-scripts" not in repr(local)


def test_unset_password_env_is_a_clear_error(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITE_A_PASSWORD", raising=False)
    with pytest.raises(ClientConfigError) as caught:
        load_client_settings().connections["site-a"].resolve_password()
    assert str(caught.value) == (
        "environment variable SITE_A_PASSWORD is not set "
        "(it holds the password of 'alice' at https://a.example:8080)"
    )
    assert isinstance(caught.value, LibrarianError)
    with pytest.raises(ClientConfigError, match="no password_env"):
        ConnectionInfo(url="http://x", user="u").resolve_password()


def test_connection_needs_one_password_source_and_a_url() -> None:
    with pytest.raises(ValueError, match="not both"):
        ConnectionInfo(url="http://x", user="u", password_env="P", password="p")
    with pytest.raises(ValueError, match="url"):
        ConnectionInfo(url="x.example", user="u")


def test_unknown_connection_lists_the_known_ones(config: Path) -> None:
    with pytest.raises(
        ClientConfigError, match=r"no connection named 'b' in .* \(known: local, site-a\)"
    ):
        load_client_settings().connection("b")


def test_missing_file_means_no_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(tmp_path / "absent.toml"))
    assert load_client_settings().connections == {}
    with pytest.raises(ClientConfigError, match="not found"):
        load_client_settings(tmp_path / "absent.toml")  # asked for explicitly


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIBRARIAN_CLIENT_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".config" / "librarian").mkdir(parents=True)
    (tmp_path / ".config" / "librarian" / "client.toml").write_text(GOOD)
    assert set(load_client_settings().connections) == {"site-a", "local"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[connections.x\n", "Expected ']'"),
        ('[connections.x]\nurl = "http://h"\n', "connections.x.user: Field required"),
        ('[connections.x]\nurl = "http://h"\nuser = "u"\ncolour = 1\n', "connections.x.colour"),
        ("connections = 3\n", "connections: Input should be a valid dictionary"),
    ],
)
def test_broken_files_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    path = tmp_path / "client.toml"
    path.write_text(body)
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(path))
    with pytest.raises(ClientConfigError) as caught:
        load_client_settings()
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_client_settings_is_lazy_and_follows_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[connections.x\n")
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(broken))
    import librarian_dagster.client as client_package

    importlib.reload(client_package)  # importing never reads (or trips over) the file
    lazy = LazyClientSettings()
    with pytest.raises(ClientConfigError):
        _ = lazy.connections

    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(good))
    assert set(lazy.connections) == {"site-a", "local"}
    good.write_text('[connections.only]\nurl = "http://h"\nuser = "u"\npassword_env = "P"\n')
    assert set(lazy.connections) == {"site-a", "local"}  # cached until the path changes...
    assert set(lazy.reload().connections) == {"only"}  # ...or reload() is called
    assert set(client_settings.connections) == {"only"}  # the module-level proxy
