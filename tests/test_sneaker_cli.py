"""``librarian sneaker manifest|ingest|wipe``: what an operator reads, and one-line errors.

The server-side commands run against a config with a drive; ``ingest`` is a client
command, and a bad ``--manifest`` is refused before any librarian is asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from librarian_dagster.cli.main import app
from librarian_dagster.services.sneaker import fill_drive
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.wire.sneaker import MANIFEST_FILE
from tests.sneaker_helpers import DriveSite, drive_site
from tests.test_cli_client import assert_one_line_error

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> DriveSite:
    found = drive_site(make_settings, "", tmp_path, capacity=2_500)
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(found.settings.config_file))
    return found


def test_manifest_then_wipe_as_an_operator_sees_them(site: DriveSite, tmp_path: Path) -> None:
    for i in range(3):
        site.add_book(f"2026/12/07/b{i}", 1000)
    fill_drive(site.site.catalogue, site.settings, "drive1")
    out = tmp_path / "drive1.json"
    shipped = invoke("sneaker", "manifest", "--store", "drive1", "--out", str(out))
    assert shipped.exit_code == 0, shipped.output
    assert "2 books, 2.0 KiB" in shipped.stdout and "in transit" in shipped.stdout
    assert json.loads(out.read_text()) == json.loads((site.drive / MANIFEST_FILE).read_text())
    refused = invoke("sneaker", "wipe", "--store", "drive1")
    assert_one_line_error(
        refused, "2 books on the drive have no confirmed copy at a peer yet", "2026/12/07/b0"
    )
    assert len(site.on_drive()) == 2
    both = invoke("sneaker", "wipe", "--store", "drive1", "--force", "--lost")
    assert both.exit_code == 2, both.output  # a usage mistake
    assert both.stderr.strip() == "error: give --lost or --force, not both"
    assert len(site.on_drive()) == 2
    forced = invoke("sneaker", "wipe", "--store", "drive1", "--force")  # held here too
    assert forced.exit_code == 0, forced.output
    assert "2 books, 2.0 KiB removed; it is filling again" in forced.stdout
    assert site.on_drive() == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["manifest", "--store", "main", "--out", "m.json"], ["'main' is a local store"]),
        (["manifest", "--store", "nope", "--out", "m.json"], ["no store named 'nope'"]),
        (["manifest", "--store", "drive1", "--out", "m.json"], ["still filling; --force"]),
        (["manifest", "--store", "drive1", "--out", "/no/such/dir/m.json"], ["not a directory"]),
        (["wipe", "--store", "main"], ["'main' is a local store"]),
    ],
)
def test_server_side_mistakes_are_one_line(
    site: DriveSite, args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(invoke("sneaker", *args), *fragments)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"format": "librarian-sneaker-manifest", "vers', "not JSON at line 1 (truncated?)"),
        (b"\xff\xfe\x00", "not JSON"),
        (b'{"format": "something-else"}', "format: Input should be 'librarian-sneaker-manifest'"),
    ],
)
def test_a_bad_manifest_is_refused_before_asking_anyone(
    tmp_path: Path, content: bytes, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_bytes(content)
    monkeypatch.setenv("LIBRARIAN_PASSWORD", "x")
    result = invoke(
        "sneaker", "ingest", "--drive", "/mnt/drive1", "--manifest", str(manifest),
        "--url", "http://127.0.0.1:9", "--user", "admin",
    )  # fmt: skip
    assert_one_line_error(result, f"{manifest} is not a manifest", fragment)
