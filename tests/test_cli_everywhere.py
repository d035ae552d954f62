"""Every ``librarian`` command, run where there is no librarian: one line, exit 1, no litter.

The command list comes from the CLI itself, so a command added later is covered without
anyone remembering to. Then the ways a server-side command finds its librarian (SPEC §7,
``cli.common``): ``--config``, ``LIBRARIAN_CONFIG``, ``./librarian.toml``, ``./.librarian``,
a running ``serve``; and what it says when the catalogue is missing or not migrated.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from alembic import command
from typer.testing import CliRunner, Result

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.catalogue.migrate import alembic_config
from librarian_dagster.cli.main import app
from librarian_dagster.cli.serve_lock import ServeLock
from tests.conftest import FAST_ARGON2

runner = CliRunner()
# Commands that must succeed in an empty directory: init makes a librarian there.
CREATES_HERE = {("init",)}


def leaf_commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, command) of every command; typer vendors click, so commands are duck-typed."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        if getattr(command, "default_command", None) is not None:  # `upload LOCAL DEST`
            yield path, command.default_command
        if hasattr(command, "commands"):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), ())


def sample_arguments(command: Any) -> list[str]:
    """Values for the required parameters, so that usage errors (exit 2) are not what fails."""
    values: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        annotation = str(param.type_descriptor.annotation)
        value = "1" if "int" in annotation else "sample"
        if param.param_type_name == "option":
            values += [param.opts[0], value]
        else:
            values += [value] * (param.nargs if param.nargs > 0 else 1)
    return values


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no LIBRARIAN_* variables, an empty home and state dir."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in list(os.environ):
        if name.startswith(("LIBRARIAN_", "DAGSTER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("LIBRARIAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(empty)
    return empty


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


COMMANDS = [path for path, _ in leaf_commands() if path not in CREATES_HERE]


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(path) for path in COMMANDS])
def test_every_command_fails_in_one_line_where_there_is_no_librarian(
    path: tuple[str, ...], nowhere: Path
) -> None:
    command = dict(leaf_commands())[path]
    result = runner.invoke(app, [*path, *sample_arguments(command)], input="")
    one_error_line(result)
    assert list(nowhere.iterdir()) == [], "the command left files behind"


def test_the_list_of_commands_is_the_whole_cli() -> None:
    names = {" ".join(path) for path, _ in leaf_commands()}
    assert {"serve", "user create", "user delete", "store list", "corrupt list"} <= names
    assert "search" in names and "locate" in names and "upload" in names


def write_toml(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "librarian.toml"
    lines = [
        f'name = "{name}"',
        "[security]",
        *(f"{k} = {v}" for k, v in FAST_ARGON2.items()),
        "[[stores]]",
        'name = "main"',
        'root = "stores/main"',
        "reserve_bytes = 0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def init(config: Path) -> None:
    result = runner.invoke(
        app, ["--config", str(config), "init"], env={"LIBRARIAN_ADMIN_PASSWORD": "long-enough-pw"}
    )
    assert result.exit_code == 0, result.output


def users(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [*args, "user", "list"], env=env)


def test_admin_commands_find_their_librarian_in_the_documented_order(
    nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = write_toml(tmp_path / "site", "site-a")
    init(site)
    assert not (nowhere / ".librarian").exists()

    listed = users("--config", str(site))  # 1. --config
    assert listed.exit_code == 0 and "admin" in listed.stdout
    assert users(env={"LIBRARIAN_CONFIG": str(site)}).exit_code == 0  # 2. LIBRARIAN_CONFIG
    monkeypatch.chdir(site.parent)  # 3. ./librarian.toml
    assert users().exit_code == 0
    monkeypatch.chdir(nowhere)
    line = one_error_line(users())
    assert "no librarian here" in line and "--config" in line

    # 5. the librarian whose serve is running (its lock held, its pointer left)
    lock = ServeLock(
        tmp_path / "site" / ".librarian",
        announce={"api_url": "http://127.0.0.1:1", "config_file": str(site)},
    )
    lock.acquire()
    try:
        found = users()
        assert found.exit_code == 0, found.output
        assert "admin" in found.stdout
        other = write_toml(tmp_path / "other", "site-b")
        init(other)
        second = ServeLock(tmp_path / "other" / ".librarian", announce={"config_file": str(other)})
        second.acquire()
        try:
            line = one_error_line(users())
            assert "2 librarians are running" in line and str(other) in line
        finally:
            second.release()
    finally:
        lock.release()
    # A pointer left by a serve that was killed does not count.
    stale = ServeLock(tmp_path / "site" / ".librarian", announce={"config_file": str(site)})
    stale.acquire()
    stale._handle.close()  # the lock goes as a killed process's would; the pointer stays
    stale._handle = None
    assert "no librarian here" in one_error_line(users())


def test_a_missing_or_unmigrated_catalogue_is_one_line_with_the_fix(
    nowhere: Path, tmp_path: Path
) -> None:
    site = write_toml(tmp_path / "site", "site-a")
    line = one_error_line(users("--config", str(site)))
    assert "no catalogue at" in line and "librarian init" in line
    assert not (tmp_path / "site" / ".librarian").exists(), "a stray catalogue was created"
    served = one_error_line(runner.invoke(app, ["--config", str(site), "serve"]))
    assert "no catalogue at" in served
    assert not (tmp_path / "site" / ".librarian").exists()

    init(site)
    catalogue = get_catalogue(f"sqlite:///{tmp_path / 'site' / '.librarian' / 'catalogue.sqlite'}")
    command.downgrade(alembic_config(catalogue.engine), "0001")  # as an older librarian left it
    line = one_error_line(users("--config", str(site)))
    assert "schema revision 0001" in line and "librarian init" in line
    init(site)  # init migrates it
    assert users("--config", str(site)).exit_code == 0


def test_init_refuses_to_migrate_under_a_running_serve(nowhere: Path, tmp_path: Path) -> None:
    site = write_toml(tmp_path / "site", "site-a")
    lock = ServeLock(tmp_path / "site" / ".librarian", announce={"api_url": "http://h:8080"})
    lock.acquire()
    try:
        line = one_error_line(runner.invoke(app, ["--config", str(site), "init"]))
        assert "is running" in line and "http://h:8080" in line and str(os.getpid()) in line
    finally:
        lock.release()


def test_a_bad_environment_override_names_the_variable(nowhere: Path, tmp_path: Path) -> None:
    site = write_toml(tmp_path / "site", "site-a")
    result = users("--config", str(site), env={"LIBRARIAN_API__PORT": "eighty"})
    line = one_error_line(result)
    assert line.startswith("error: LIBRARIAN_API__PORT (environment, overrides ")
    assert "api.port" in line


def test_user_delete_checks_the_user_exists_before_asking(nowhere: Path, tmp_path: Path) -> None:
    site = write_toml(tmp_path / "site", "site-a")
    init(site)
    result = runner.invoke(app, ["--config", str(site), "user", "delete", "nobody"], input="")
    line = one_error_line(result)
    assert "nobody" in line and "delete user" not in result.output
