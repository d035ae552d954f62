"""``librarian upload|search|locate`` against a real HTTP server, configured by client.toml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.cli.client_cmds import upload_pairs
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.checksums import hash_path
from tests.api_helpers import credentials
from tests.client_helpers import (
    PASSWORD_VAR,
    RunningLibrarian,
    count,
    make_file,
    make_tree,
    write_client_config,
)

runner = CliRunner()


def invoke(*args: str):
    from librarian_dagster.cli.main import app

    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_upload_search_locate(configured: RunningLibrarian, tmp_path: Path) -> None:
    one = make_file(tmp_path / "src" / "one.bin", 1_500_000)
    result = invoke("upload", str(one), "cli/one.bin")
    assert result.exit_code == 0, result.output
    assert f"stored  cli/one.bin  {hash_path(one)}" in result.stdout

    tree = make_tree(tmp_path / "src" / "tree")
    two = make_file(tmp_path / "src" / "two.bin")
    result = invoke("upload", "--transfer", "http", str(tree), str(two), "cli/batch")
    assert result.exit_code == 0, result.output
    assert f"stored  cli/batch/tree  {hash_path(tree)}" in result.stdout
    assert f"stored  cli/batch/two.bin  {hash_path(two)}" in result.stdout

    listed = invoke("search", "--name", "cli/**", "--json")
    assert listed.exit_code == 0, listed.output
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in records] == ["cli/one.bin", "cli/batch/tree", "cli/batch/two.bin"]
    assert records[1]["is_directory"] is True

    limited = invoke("search", "--name", "cli/batch/*", "--limit", "1", "--json")
    assert [json.loads(line)["name"] for line in limited.stdout.splitlines()] == ["cli/batch/tree"]

    table = invoke("search", "--name", "cli/one*")
    assert table.exit_code == 0, table.output
    assert "cli/one.bin" in table.stdout and "1 file(s)" in table.stderr

    located = invoke("locate", "cli/batch/tree")
    assert located.exit_code == 0, located.output
    stored_path = configured.settings.stores[0].root / "store" / "cli" / "batch" / "tree"
    assert f"checksum  {hash_path(tree)}" in located.stdout
    assert f"store main  {stored_path}  verified 20" in located.stdout
    assert "remote instances (0):" in located.stdout
    as_json = json.loads(invoke("locate", "cli/one.bin", "--json").stdout)
    assert as_json["instances"][0]["store"] == "main"


def test_upload_without_waiting(configured: RunningLibrarian, tmp_path: Path) -> None:
    result = invoke("upload", "--no-wait", str(make_file(tmp_path / "f")), "cli/nowait")
    assert result.exit_code == 0, result.output
    assert result.stdout == "1\n"  # the id alone, for `librarian upload status`
    assert "staged (upload 1)  cli/nowait  xxh3_128:" in result.stderr


def test_upload_prefix_with_trailing_slash() -> None:
    assert upload_pairs(["a/b.dat"], "prefix/") == [(Path("a/b.dat"), "prefix/b.dat")]
    assert upload_pairs(["a/b.dat"], "name") == [(Path("a/b.dat"), "name")]
    assert upload_pairs(["x/", "y"], "p") == [(Path("x"), "p/x"), (Path("y"), "p/y")]


def test_errors_are_one_line(configured: RunningLibrarian, tmp_path: Path) -> None:
    local = make_file(tmp_path / "f")
    assert invoke("upload", str(local), "cli/f").exit_code == 0
    assert_one_line_error(
        invoke("upload", str(make_file(tmp_path / "g")), "cli/f"),
        "upload of 'cli/f' failed: 'cli/f' is already catalogued",
    )
    several = invoke("upload", str(local), str(make_file(tmp_path / "h")), "cli")
    assert_one_line_error(several, "1 of 2 uploads failed: 'cli/f': ")
    assert several.stdout.startswith("stored  cli/h  ")  # the other one was stored
    assert_one_line_error(invoke("locate", "cli/[nothing]"), "no file named 'cli/[nothing]'")
    assert_one_line_error(invoke("upload", str(tmp_path / "missing"), "x"), "no such file")
    assert_one_line_error(invoke("search", "--since", "yesterday"), "--since")
    assert_one_line_error(invoke("search", "--server", "nowhere"), "no connection named 'nowhere'")
    book = make_tree(tmp_path / "book")
    (book / "link").symlink_to(book / "empty")
    assert_one_line_error(invoke("upload", str(book), "cli/book"), "symlink")


def test_wrong_password_and_missing_password(
    configured: RunningLibrarian, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "wrong-password")
    assert_one_line_error(invoke("search"), "wrong user name or password", "401")
    monkeypatch.delenv(PASSWORD_VAR)
    assert_one_line_error(invoke("search"), f"environment variable {PASSWORD_VAR} is not set")


def test_read_only_user_cannot_upload(
    configured: RunningLibrarian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = credentials(UserLevel.READ_ONLY)
    monkeypatch.setenv("LIBRARIAN_PASSWORD", password)
    result = invoke(
        "upload", "--url", configured.url, "--user", user, str(make_file(tmp_path / "f")), "x"
    )
    assert_one_line_error(result, "403", "read_append")
    assert count(configured, IncomingTransfer) == 0


def test_choosing_the_connection(
    librarian: RunningLibrarian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = credentials(UserLevel.READ_ONLY)
    dead = f"http://127.0.0.1:{_closed_port()}"
    config = write_client_config(
        tmp_path / "client.toml", {"good": (librarian.url, user), "dead": (dead, user)}
    )
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(config))
    monkeypatch.setenv(PASSWORD_VAR, password)
    monkeypatch.delenv("LIBRARIAN_SERVER", raising=False)
    monkeypatch.delenv("LIBRARIAN_PASSWORD", raising=False)

    assert_one_line_error(invoke("search"), "several connections are configured (dead, good)")
    assert invoke("search", "--server", "good").exit_code == 0
    assert_one_line_error(invoke("search", "-s", "dead"), f"cannot reach {dead}")
    monkeypatch.setenv("LIBRARIAN_SERVER", "good")
    assert invoke("search").exit_code == 0
    assert_one_line_error(invoke("search", "--server", "dead"), "cannot reach")  # flag wins

    # --url/--user take the password from LIBRARIAN_PASSWORD and beat LIBRARIAN_SERVER.
    monkeypatch.setenv("LIBRARIAN_SERVER", "dead")
    assert_one_line_error(
        invoke("search", "--url", librarian.url, "--user", user), "LIBRARIAN_PASSWORD"
    )
    monkeypatch.setenv("LIBRARIAN_PASSWORD", password)
    assert invoke("search", "--url", librarian.url, "--user", user).exit_code == 0
    assert_one_line_error(invoke("search", "--url", librarian.url), "--url needs --user")
    assert_one_line_error(
        invoke("search", "--url", librarian.url, "--user", user, "--server", "good"), "not both"
    )

    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("LIBRARIAN_SERVER")
    assert_one_line_error(invoke("search"), "no librarian to talk to")


def _closed_port() -> int:
    from tests.conftest import free_port

    return free_port()


def test_broken_client_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "client.toml"
    config.write_text("[connections.site\nurl = 1\n")
    monkeypatch.setenv("LIBRARIAN_CLIENT_CONFIG", str(config))
    assert_one_line_error(invoke("search"), str(config))
    config.write_text('[connections.site]\nurl = "ftp://x"\nuser = "u"\n')
    assert_one_line_error(invoke("search"), "connections.site.url")
    assert os.environ["LIBRARIAN_CLIENT_CONFIG"] == str(config)
