"""What a corrupt copy looks like from outside: /ping, /corrupt, locate and ``corrupt list``.

A real HTTP librarian (``tests.client_helpers``) holds a book; its stored bytes are damaged
and the integrity service finds it, as the ``checksums_match`` check would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from librarian_dagster.client import LibrarianError
from librarian_dagster.services.integrity import verify_instances
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from tests.api_helpers import credentials
from tests.client_helpers import RunningLibrarian, make_tree, running_librarian


@pytest.fixture
def librarian(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> Iterator[RunningLibrarian]:
    with running_librarian(make_settings(database_url=database_url)) as running:
        yield running


def damaged(librarian: RunningLibrarian, tmp_path: Path, name: str) -> Path:
    """Upload a book, damage its stored copy, run the integrity check; return the copy."""
    with librarian.client() as client:
        client.upload(make_tree(tmp_path / name.replace("/", "_")), name)
    stored = librarian.stores["main"].path_for(name)
    victim = next(path for path in sorted(stored.rglob("*")) if path.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")
    report = verify_instances(librarian.catalogue, librarian.stores)
    assert name in [bad.name for bad in report.bad if bad.new]
    return stored


def test_ping_and_locate_tell_the_truth_until_the_copy_is_repaired(
    librarian: RunningLibrarian, tmp_path: Path
) -> None:
    with librarian.client(UserLevel.ADMIN) as admin:
        assert admin.ping().healthy and admin.ping().corrupt_copies == 0
    with librarian.client() as client:
        client.upload(make_tree(tmp_path / "pristine"), "keep/original")
    original = librarian.stores["main"].path_for("keep/original")
    backup = tmp_path / "backup"
    shutil.copytree(original, backup)
    victim = next(path for path in sorted(original.rglob("*")) if path.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")
    verify_instances(librarian.catalogue, librarian.stores)

    with librarian.client(UserLevel.ADMIN) as admin:
        ping = admin.ping()
        assert not ping.healthy and ping.corrupt_copies == 1
        assert all(store.ok for store in ping.stores) and ping.catalogue.ok
        (instance,) = admin.get_file("keep/original").instances
        assert instance.corrupt is not None and instance.corrupt.value == "mismatch"
        assert not instance.available
        (record,) = list(admin.iter_corrupt())
        assert (record.name, record.store, record.status.value) == (
            "keep/original",
            "main",
            "detected",
        )

    shutil.rmtree(original)
    shutil.copytree(backup, original)
    assert verify_instances(librarian.catalogue, librarian.stores).repaired == ["keep/original"]
    with librarian.client(UserLevel.ADMIN) as admin:
        assert admin.ping().healthy and admin.ping().corrupt_copies == 0
        (instance,) = admin.get_file("keep/original").instances
        assert instance.corrupt is None and instance.available
        assert list(admin.iter_corrupt()) == []
        (history,) = list(admin.iter_corrupt(include_resolved=True))
        assert (history.status.value, history.resolved_by) == ("repaired", "verified")


def test_the_corrupt_routes_are_admin_only_and_page_by_cursor(
    librarian: RunningLibrarian, tmp_path: Path
) -> None:
    for index in range(3):
        damaged(librarian, tmp_path, f"page/{index}")
    with (
        librarian.client(UserLevel.READ_APPEND) as client,
        pytest.raises(LibrarianError, match="403"),
    ):
        list(client.iter_corrupt())
    with librarian.client(UserLevel.ADMIN) as admin:
        names = [record.name for record in admin.iter_corrupt(page_size=2)]
        assert names == ["page/0", "page/1", "page/2"]
        first = admin.request("GET", "/corrupt", params={"limit": 2}).json()
        assert first["unresolved"] == 3 and first["next_cursor"]
        assert len(first["corrupt"]) == 2
        files_cursor = admin.request("GET", "/files", params={"limit": 1}).json()["next_cursor"]
        assert files_cursor
        with pytest.raises(LibrarianError, match="invalid cursor"):
            admin.request("GET", "/corrupt", params={"cursor": files_cursor})
        with pytest.raises(LibrarianError, match="limit"):
            admin.request("GET", "/corrupt", params={"limit": 0})
        record_id = first["corrupt"][0]["id"]
        dismissed = admin.dismiss_corrupt(record_id, "the master copy is at site-b")
        assert dismissed.status.value == "dismissed" and dismissed.resolved_by == "user-admin"
        with pytest.raises(LibrarianError, match="already dismissed"):
            admin.dismiss_corrupt(record_id, "again")
        with pytest.raises(LibrarianError, match="no corrupt-copy record"):
            admin.dismiss_corrupt(999_999, "nothing")
        with pytest.raises(LibrarianError):
            admin.request("POST", f"/corrupt/{record_id}/dismiss", json={"note": ""})
        assert [record.name for record in admin.iter_corrupt()] == ["page/1", "page/2"]
        assert admin.ping().corrupt_copies == 2


NAME = "cli/[/x]bad[red]"


def test_the_cli_lists_dismisses_and_locate_says_corrupt(
    librarian: RunningLibrarian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian_dagster.cli.main import app

    damaged(librarian, tmp_path, NAME)  # a name that is Rich markup: printed as it is
    user, password = credentials(UserLevel.ADMIN)
    monkeypatch.setenv("LIBRARIAN_PASSWORD", password)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    where = ["--url", librarian.url, "--user", user]

    located = runner.invoke(app, ["locate", NAME, *where])
    assert located.exit_code == 0, located.output
    assert "[corrupt" in located.stdout and "[unavailable]" not in located.stdout

    listed = runner.invoke(app, ["corrupt", "list", *where])
    assert listed.exit_code == 0, listed.output
    assert NAME in listed.stdout and "corrupt" in listed.stdout
    assert "1 unresolved corrupt copy" in listed.stderr

    as_json = runner.invoke(app, ["corrupt", "list", "--json", *where])
    (record,) = json.loads(as_json.stdout)
    dismissed = runner.invoke(
        app, ["corrupt", "dismiss", str(record["id"]), "--note", "known", *where]
    )
    assert dismissed.exit_code == 0, dismissed.output
    again = runner.invoke(app, ["corrupt", "dismiss", str(record["id"]), "--note", "x", *where])
    assert again.exit_code == 1
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("error: ") and "already dismissed" in line
    assert NAME not in runner.invoke(app, ["corrupt", "list", *where]).stdout
