"""Sneaker stores are drives: declared strictly, provisioned once, never written when foreign.

The identity file (``storage.sneaker``), the keys of a sneaker store, and what
``librarian init`` and ``serve``'s start (``bootstrap.prepare`` / ``ready``) do with a
drive that is empty, this store's, another store's, garbled, or not mounted at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from librarian_dagster.cli.main import app
from librarian_dagster.services.bootstrap import prepare, ready
from librarian_dagster.settings import LibrarianSettings, SettingsError
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.posix import write_new_file
from librarian_dagster.storage.sneaker import (
    IDENTITY_FILE,
    DriveError,
    check_drive,
    provision_drive,
    read_identity,
)

# A directory stands in for a drive (require_mount = false); the mount check has its own test.
DRIVE = (
    '[[stores]]\nname = "drive1"\nkind = "sneaker"\nroot = "{root}"\nrequire_mount = false\n{extra}'
)


def drive_toml(root: Path, extra: str = "") -> str:
    return DRIVE.format(root=root, extra=extra)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` with a file's bytes: to show that nothing changed."""
    found: dict[str, bytes | None] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in files:
            path = Path(directory, name)
            found[os.path.relpath(path, root)] = path.read_bytes()
    return found


# -- the identity file ---------------------------------------------------------------------


def test_an_empty_drive_is_provisioned_once(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()  # what mkfs.ext4 leaves on a fresh drive
    identity, written = provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    assert written
    assert (identity.librarian, identity.store, identity.format) == ("site-a", "drive1", 1)
    on_disk = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert on_disk["drive_uuid"] == identity.drive_uuid and on_disk["created"] == identity.created
    assert sorted(os.listdir(tmp_path)) == [IDENTITY_FILE, "lost+found"]  # no temporary left

    again, written_again = provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    assert (again, written_again) == (identity, False)
    assert check_drive(tmp_path, "site-a", "drive1", require_mount=False) == identity


@pytest.mark.parametrize(
    ("librarian", "store"), [("site-a", "drive2"), ("site-b", "drive1")], ids=["store", "site"]
)
def test_another_stores_drive_is_refused_and_left_alone(
    tmp_path: Path, librarian: str, store: str
) -> None:
    identity, _ = provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    before = snapshot(tmp_path)
    for attempt in (provision_drive, check_drive):
        with pytest.raises(DriveError, match=identity.drive_uuid) as info:
            attempt(tmp_path, librarian, store, require_mount=False)
        assert "nothing was written" in str(info.value)
    assert snapshot(tmp_path) == before


def test_a_drive_with_data_but_no_identity_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "holiday-photos").mkdir()
    (tmp_path / "holiday-photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / f".tmp-1-abcd1234-{IDENTITY_FILE}").write_text("{")  # not removed either
    before = snapshot(tmp_path)
    with pytest.raises(DriveError, match=r"not empty \(holiday-photos\)"):
        provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    with pytest.raises(DriveError, match="has no identity"):
        check_drive(tmp_path, "site-a", "drive1", require_mount=False)
    assert snapshot(tmp_path) == before


GOOD = {
    "format": 1,
    "drive_uuid": "0b9c1b6e-2f39-4c49-8a3e-3f1c2a0b6d5e",
    "librarian": "site-a",
    "store": "drive1",
    "created": "2026-12-07T05:00:00+00:00",
}


@pytest.mark.parametrize(
    "text",
    [
        "{",
        '{"format": 1}',
        '["drive"]',
        json.dumps(GOOD | {"format": True}),
        json.dumps(GOOD | {"created": 5}),
        json.dumps(GOOD | {"created": "yesterday"}),
        json.dumps(GOOD | {"drive_uuid": "a" * 80}),
        json.dumps(GOOD | {"store": "../drive1"}),
        json.dumps(GOOD | {"extra": 1}),
    ],
)
def test_a_garbled_identity_is_an_error_not_a_new_drive(tmp_path: Path, text: str) -> None:
    (tmp_path / IDENTITY_FILE).write_text(text)
    with pytest.raises(DriveError, match="garbled"):
        provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    assert (tmp_path / IDENTITY_FILE).read_text() == text


def test_a_good_identity_reads_and_a_fifo_or_symlink_does_not(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(GOOD))
    assert read_identity(tmp_path) is not None
    (tmp_path / IDENTITY_FILE).unlink()
    os.mkfifo(tmp_path / IDENTITY_FILE)  # would block a plain open() for ever
    with pytest.raises(DriveError, match="not a small file"):
        read_identity(tmp_path)
    (tmp_path / IDENTITY_FILE).unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps(GOOD))
    (tmp_path / IDENTITY_FILE).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(DriveError, match="cannot read"):
        read_identity(tmp_path)


def test_a_newer_format_is_named(tmp_path: Path) -> None:
    provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    data = json.loads((tmp_path / IDENTITY_FILE).read_text()) | {"format": 2, "new": 1}
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(data))
    with pytest.raises(DriveError, match="format 2"):
        read_identity(tmp_path)


def test_no_drive_mounted_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "mnt" / "drive1"
    with pytest.raises(DriveError, match="no drive is mounted"):
        provision_drive(root, "site-a", "drive1", require_mount=False)
    store = LocalStore("drive1", root, kind="sneaker")
    with pytest.raises(StoreError, match="no drive is mounted"):
        store.ensure_layout()
    assert not (tmp_path / "mnt").exists()


def test_write_new_file_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "identity.json"
    assert write_new_file(target, b"first")
    assert not write_new_file(target, b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["identity.json"]


# -- the keys of a sneaker store ----------------------------------------------------------


def test_a_sneaker_store_is_not_ingestable_and_takes_its_keys(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    extra = 'capacity_bytes = 1_000_000\ndestination = "site-b"\nreserve_bytes = 0\n'
    settings = make_settings(extra_toml=drive_toml(tmp_path / "d", extra))
    drive = settings.store("drive1")
    assert (drive.kind, drive.ingestable) == ("sneaker", False)
    assert (drive.capacity_bytes, drive.destination, drive.reserve_bytes) == (
        1_000_000,
        "site-b",
        0,
    )
    assert settings.store("main").ingestable  # local stores keep their default


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("ingestable = true\n", "cannot have ingestable = true"),
        ('inbox = "/data/incoming"\n', "cannot have inbox"),
        ("rolling = { keep_days = 3 }\n", "cannot have rolling"),
        ("capacity_bytes = 0\n", "capacity_bytes"),
        ('destination = "../site-b"\n', "destination"),
    ],
)
def test_wrong_keys_for_a_sneaker_store_are_one_clear_error(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        make_settings(extra_toml=drive_toml(tmp_path / "d", extra))
    assert "\n" not in str(info.value)


def test_sneaker_keys_on_a_local_store_are_refused(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    local = '[[stores]]\nname = "more"\nroot = "more"\ncapacity_bytes = 5\n'
    with pytest.raises(SettingsError, match='only for stores of kind "sneaker"'):
        make_settings(extra_toml=local)


# -- init and serve ------------------------------------------------------------------------


def test_init_provisions_an_empty_drive_and_lays_it_out(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    root = tmp_path / "drive"
    root.mkdir()
    settings = make_settings(extra_toml=drive_toml(root))
    notes = prepare(settings)
    identity = check_drive(root, "test-site", "drive1", require_mount=False)
    assert notes == [f"store 'drive1': provisioned {identity.describe()}"]
    assert (root / "staging").is_dir() and (root / "store").is_dir()
    assert prepare(settings) == []  # a second init: nothing to say, same identity
    assert check_drive(root, "test-site", "drive1", require_mount=False) == identity
    assert ready(settings) == []


def test_init_refuses_a_foreign_drive_and_writes_nothing_to_it(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    root = tmp_path / "drive"
    root.mkdir()
    provision_drive(root, "elsewhere", "drive9", require_mount=False)
    before = snapshot(root)
    settings = make_settings(extra_toml=drive_toml(root))
    with pytest.raises(DriveError, match="drive9"):
        prepare(settings)
    assert snapshot(root) == before


def test_serve_skips_a_drive_that_is_away_or_foreign_and_writes_nothing(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    root = tmp_path / "mnt" / "drive1"
    settings = make_settings(extra_toml=drive_toml(root))
    away = f"store 'drive1': no drive is mounted at {root}; skipped"
    assert prepare(settings) == [away]
    assert not root.exists()
    assert ready(settings) == [away]
    assert not root.exists()

    root.mkdir(parents=True)
    provision_drive(root, "elsewhere", "drive9", require_mount=False)
    before = snapshot(root)
    (note,) = ready(settings)
    assert "drive9" in note and note.endswith("; skipped")
    assert snapshot(root) == before
    assert (settings.store("main").root / "staging").is_dir()  # the other stores are laid out


def test_init_says_it_in_one_line(
    make_settings: Callable[..., LibrarianSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "drive"
    root.mkdir()
    (root / "somebody-elses-data").write_text("keep me")
    settings = make_settings(extra_toml=drive_toml(root))
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(settings.config_file))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: store 'drive1':"), result.output
    assert "refusing to take it over" in lines[0]
    assert os.listdir(root) == ["somebody-elses-data"]

    (root / "somebody-elses-data").unlink()
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert "store 'drive1': provisioned drive " in result.output


# -- what the review found ---------------------------------------------------------------------


def test_an_empty_mount_point_without_a_drive_is_not_taken_for_one(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    """The usual unplugged drive: its mount point is an empty directory of the host's disk."""
    root = tmp_path / "mnt" / "drive1"
    root.mkdir(parents=True)
    sneaker = f'[[stores]]\nname = "drive1"\nkind = "sneaker"\nroot = "{root}"\n'
    settings = make_settings(extra_toml=sneaker)
    assert settings.store("drive1").require_mount  # the default
    (note,) = prepare(settings)
    assert "not a mount point" in note and note.endswith("; skipped")
    (note,) = ready(settings)
    assert "not a mount point" in note
    assert os.listdir(root) == []  # no identity, no layout on the host's disk
    with pytest.raises(StoreError, match="not a mount point"):
        LocalStore("drive1", root, kind="sneaker").ensure_layout()


def test_require_mount_is_only_for_sneaker_stores(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    local = '[[stores]]\nname = "more"\nroot = "more"\nrequire_mount = false\n'
    with pytest.raises(SettingsError, match="require_mount"):
        make_settings(extra_toml=local)


def test_an_interrupted_provisioning_is_finished_not_refused(tmp_path: Path) -> None:
    leftover = tmp_path / f".tmp-123-abcd1234-{IDENTITY_FILE}"
    leftover.write_text('{"format": 1')  # a crash before the rename
    identity, written = provision_drive(tmp_path, "site-a", "drive1", require_mount=False)
    assert written and os.listdir(tmp_path) == [IDENTITY_FILE]
    assert read_identity(tmp_path) == identity


def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(DriveError, match="is a symlink"):
        provision_drive(tmp_path / "link", "site-a", "drive1", require_mount=False)
    assert os.listdir(real) == []


def test_a_drive_that_cannot_be_written_is_one_line(
    make_settings: Callable[..., LibrarianSettings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def read_only(path: Path, data: bytes) -> bool:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr("librarian_dagster.storage.posix.write_new_file", read_only)
    root = tmp_path / "drive"
    root.mkdir()
    settings = make_settings(extra_toml=drive_toml(root))
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(settings.config_file))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: store 'drive1': cannot write the drive identity at {root}: Read-only file system"
    ]
    assert os.listdir(root) == []


def test_serve_skips_a_drive_it_cannot_lay_out_and_serves_on(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    root = tmp_path / "drive"
    root.mkdir()
    settings = make_settings(extra_toml=drive_toml(root))
    prepare(settings)
    (root / "store").rmdir()
    (root / "store").symlink_to(tmp_path)  # a layout that would lead outside the drive
    (note,) = ready(settings)
    assert "store" in note and note.endswith("; skipped")
    assert (root / "store").is_symlink()
    with pytest.raises(StoreError):  # init says it and stops
        prepare(settings)
