"""``services.sneaker.fill_drive`` on SQLite and PostgreSQL: what goes on a drive, and when not.

Oldest first, verified and recorded one by one, stopping at the first book that does not
fit; books that travel another way (another drive going the same way, the destination
peer already holding them) are left out; a drive that is not the right one, not filling,
disabled or busy is refused with nothing written; what a dead fill left is cleaned up or
adopted; a copy here that does not verify refuses its book and is recorded as corrupt.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from librarian_dagster.catalogue.models import (
    CorruptFile,
    Event,
    File,
    Instance,
    Librarian,
    Store,
)
from librarian_dagster.services.copies import record_remote_instance
from librarian_dagster.services.sneaker import DriveRefused, FillReport, fill_drive
from librarian_dagster.services.sneaker_plan import fills_due
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.sneaker import IDENTITY_FILE, DriveBusy, DriveError, drive_lock
from tests.sneaker_helpers import DriveSite, drive_site

KB = 1000


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> DriveSite:
    return drive_site(make_settings, database_url, tmp_path, capacity=2_500)


def fill(site: DriveSite, **kwargs: object) -> FillReport:
    return fill_drive(site.site.catalogue, site.settings, "drive1", **kwargs)  # type: ignore[arg-type]


def set_state(site: DriveSite, state: DriveState, store: str = "drive1") -> None:
    with site.site.catalogue.session() as session:
        session.execute(update(Store).where(Store.name == store).values(state=state))


def test_fills_oldest_first_verified_until_the_next_book_does_not_fit(site: DriveSite) -> None:
    names = [f"2026/12/0{i}/obs.uvh5" for i in range(1, 5)]
    for name in names:
        site.add_book(name, KB)
    alerts: list[FillReport] = []
    report = fill(site, on_full=alerts.append)
    assert report.copied == names[:2] and report.did_not_fit == names[2]
    assert site.on_drive() == names[:2]
    for name in names[:2]:  # the same bytes as the main store's copy, read-only
        assert site.checksum_on_drive(name) == str(hash_path(site.site.store.path_for(name)))
        assert not os.stat(site.drive / "store" / name).st_mode & stat.S_IWUSR
    assert (report.books_on_drive, report.bytes_on_drive, report.free_bytes) == (2, 2 * KB, 500)
    assert alerts == [report] and report.full
    row = site.store_row()
    assert row.state == DriveState.FULL
    with site.site.catalogue.session() as session:
        verified = session.scalars(
            select(Instance.verified_at).where(Instance.store_id == row.id)
        ).all()
        third = session.scalar(select(File.id).where(File.name == names[2]))
    assert len(verified) == 2 and all(verified)
    assert row.fill_high_water_file_id == third - 1  # the next fill starts at the third
    assert list((site.drive / "staging").iterdir()) == []  # nothing half-made left


def test_a_book_being_copied_is_heard_from_before_it_is_done(
    site: DriveSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill's log is its heartbeat while one large book is copied (stuck_runs_sensor)."""
    from librarian_dagster.services import sneaker

    site.add_book("large", KB)
    monkeypatch.setattr(sneaker, "BYTES_PROGRESS_EVERY", -1.0)
    lines: list[str] = []
    fill(site, log=lines.append)
    assert f"copying large: {KB} of {KB} bytes" in lines


def test_a_full_drive_is_not_filled_again(site: DriveSite) -> None:
    for i in range(3):
        site.add_book(f"b{i}", KB)
    fill(site)
    before = site.drive_listing()
    with pytest.raises(DriveRefused, match="'drive1' is full, not filling"):
        fill(site)
    assert site.drive_listing() == before and site.on_drive() == ["b0", "b1"]


def test_a_second_fill_copies_only_what_arrived_since(site: DriveSite) -> None:
    site.add_book("first", KB)
    assert fill(site).copied == ["first"]
    again = fill(site)
    assert (again.copied, again.adopted, again.full) == ([], [], False)
    site.add_book("second", KB)
    assert fill(site).copied == ["second"]
    assert site.on_drive() == ["first", "second"]
    assert site.store_row().state == DriveState.FILLING


def test_books_that_travel_another_way_are_left_out(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    other = tmp_path / "drive2"
    other.mkdir()
    site = drive_site(
        make_settings,
        database_url,
        tmp_path,
        extra_toml=(
            f'[[stores]]\nname = "drive2"\nkind = "sneaker"\nroot = "{other}"\n'
            'require_mount = false\nreserve_bytes = 0\ndestination = "site-b"\n'
        ),
        destination='"site-b"',
    )
    for name in ("on-drive2", "at-site-b", "wanted"):
        site.add_book(name, KB)
    with site.site.catalogue.session() as session:
        ids = dict(session.execute(select(File.name, File.id)).tuples().all())
        drive2 = session.scalar(select(Store.id).where(Store.name == "drive2"))
        session.add(Instance(file_id=ids["on-drive2"], store_id=drive2, path="/x"))
        peer = Librarian(name="site-b", url="http://b", remote_user="a", encrypted_password=b"x")
        session.add(peer)
        session.flush()
        record_remote_instance(session, ids["at-site-b"], peer.id, "main")
    set_state(site, DriveState.IN_TRANSIT, "drive2")
    report = fill(site)
    assert report.copied == ["wanted"] and site.on_drive() == ["wanted"]


def test_a_destination_that_is_no_peer_is_refused_with_nothing_written(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    site = drive_site(make_settings, database_url, tmp_path, destination='"site-b"')
    site.add_book("book", KB)
    before = site.drive_listing()
    with pytest.raises(DriveRefused, match="destination 'site-b', which is not a peer here"):
        fill(site)
    assert site.drive_listing() == before and site.on_drive() == []


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("foreign", "holds store 'drive9'"),
        ("other-uuid", "its copies are on drive"),
        ("away", "no drive is mounted"),
        ("disabled", "is disabled"),
        ("in_transit", "is in_transit, not filling"),
    ],
)
def test_a_drive_that_may_not_be_filled_is_refused_with_nothing_written(
    site: DriveSite, tamper: str, message: str
) -> None:
    site.add_book("book", KB)
    identity = site.drive / IDENTITY_FILE
    if tamper == "foreign":
        identity.write_text(identity.read_text().replace('"drive1"', '"drive9"'))
    elif tamper == "other-uuid":
        with site.site.catalogue.session() as session:
            session.execute(
                update(Store)
                .where(Store.name == "drive1")
                .values(drive_uuid="00000000-0000-4000-8000-000000000000")
            )
    elif tamper == "away":
        for entry in site.drive.iterdir():
            entry.unlink() if entry.is_file() else entry.rmdir()
        site.drive.rmdir()
    elif tamper == "disabled":
        with site.site.catalogue.session() as session:
            session.execute(update(Store).where(Store.name == "drive1").values(enabled=False))
    else:
        set_state(site, DriveState.IN_TRANSIT)
    before = site.drive_listing() if site.drive.exists() else None
    with pytest.raises(DriveRefused, match=message):
        fill(site)
    assert (site.drive_listing() if site.drive.exists() else None) == before
    assert site.on_drive() == []


def test_a_drive_another_fill_holds_is_refused(site: DriveSite) -> None:
    site.add_book("book", KB)
    with drive_lock(site.drive / "staging", "drive1"), pytest.raises(DriveBusy):
        fill(site)
    assert site.on_drive() == []
    missing = site.drive / "no-staging"
    expected = r"cannot lock the drive's staging area .* provisioned"
    with pytest.raises(DriveError, match=expected), drive_lock(missing, "drive1"):
        pass


def test_what_a_dead_fill_left_is_cleaned_up_or_adopted(site: DriveSite) -> None:
    """A half copy in staging goes; a book renamed onto the drive but never recorded is
    recorded if its bytes are the book's, replaced if not."""
    for name in ("renamed-good", "renamed-bad", "half"):
        site.add_book(name, 700)
    leftover = site.drive / "staging" / ("ab" * 16)
    leftover.mkdir()
    (leftover / "half").write_bytes(b"x" * 300)
    store = site.drive / "store"
    (store / "renamed-good").write_bytes(site.site.store.path_for("renamed-good").read_bytes())
    (store / "renamed-bad").write_bytes(b"not the book" * 50)
    report = fill(site)
    assert report.leftovers_removed == 1 and not leftover.exists()
    assert report.adopted == ["renamed-good"]
    assert report.copied == ["renamed-bad", "half"]
    assert site.on_drive() == ["renamed-good", "renamed-bad", "half"]
    for name in site.on_drive():
        assert site.checksum_on_drive(name) == str(hash_path(site.site.store.path_for(name)))


def test_a_copy_here_that_does_not_verify_refuses_its_book_and_is_recorded(
    site: DriveSite,
) -> None:
    site.add_book("good", KB)
    bad_id = site.add_book("bad", KB)
    path = site.site.store.path_for("bad")
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    report = fill(site)
    assert report.copied == ["good"]
    ((name, why),) = report.refused
    assert name == "bad" and "recorded as corrupt" in why
    assert site.on_drive() == ["good"] and not (site.drive / "store" / "bad").exists()
    with site.site.catalogue.session() as session:
        assert session.scalar(select(CorruptFile.file_id)) == bad_id
    assert site.store_row().fill_high_water_file_id == bad_id - 1  # looked at again later


def test_fills_due_asks_only_while_newer_books_wait(site: DriveSite) -> None:
    declared = {c.name: c for c in site.settings.stores}

    def due() -> tuple[list[str], dict[str, str]]:
        with site.site.catalogue.session() as session:
            found, problems = fills_due(session, site.settings, declared)
        return [f.store for f in found], problems

    assert due() == ([], {})
    site.add_book("one", KB)
    assert due() == (["drive1"], {})
    fill(site)
    assert due() == ([], {})
    site.add_book("two", KB)
    os.rename(site.drive, site.drive.with_name("away"))
    assert due() == ([], {"drive1": "no drive mounted"})
    os.rename(site.drive.with_name("away"), site.drive)
    site.add_book("three", KB)
    fill(site)  # two fits, three does not: full
    assert due() == ([], {})


def test_a_fill_killed_mid_copy_records_no_half_copy_and_a_rerun_finishes(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    """kill -9 of a real process while it copies a 256 MB book onto the drive."""
    site = drive_site(make_settings, database_url, tmp_path)
    site.add_book("small", KB)
    site.add_book("big", 256 << 20)
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from librarian_dagster.catalogue.database import get_catalogue\n"
        "from librarian_dagster.services.sneaker import fill_drive\n"
        "from librarian_dagster.settings import load_settings\n"
        "settings = load_settings(Path(sys.argv[1]))\n"
        "fill_drive(get_catalogue(settings.catalogue_url), settings, 'drive1')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(site.settings.config_file)])
    staging = site.drive / "staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until part of the big book is on the drive
        half = [p for p in staging.glob("*/big") if 0 < p.stat().st_size < 256 << 20]
        if half or process.poll() is not None:
            break
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert half, "the fill ended before it could be killed mid-copy"
    assert site.on_drive() == ["small"]  # nothing of the big book is recorded
    report = fill(site)
    assert (report.leftovers_removed, report.copied) == (1, ["big"])
    assert site.on_drive() == ["small", "big"]
    assert site.checksum_on_drive("big") == str(hash_path(site.site.store.path_for("big")))
    assert list(staging.iterdir()) == []


def test_a_book_larger_than_the_drive_is_passed_over_not_waited_for(site: DriveSite) -> None:
    site.add_book("small-1", KB)
    site.add_book("huge", 3 * KB)  # capacity is 2,500 bytes: it never fits, even empty
    site.add_book("small-2", KB)
    report = fill(site)
    assert report.copied == ["small-1", "small-2"] and not report.full
    assert report.too_big == [("huge", 3 * KB)]
    assert site.store_row().state == DriveState.FILLING
    with site.site.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "drive_too_small")).all()
    assert "huge (3000 bytes)" in event.message and "2500 bytes" in event.message
    site.add_book("small-3", KB)  # the drive fills up behind it, as it would have anyway
    assert fill(site).did_not_fit == "small-3"


def test_books_too_young_to_be_settled_wait_for_the_catalogue_lag(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL a book can become visible after a higher id: the mark must not pass
    ids that are younger than the lag, or a book committed late would never travel."""
    site = drive_site(
        make_settings,
        database_url,
        tmp_path,
        extra_toml="[transfer]\ncatalogue_lag_seconds = 600\n",
    )
    declared = {c.name: c for c in site.settings.stores}
    first = site.add_book("older", KB)
    site.add_book("newer", KB)
    with site.site.catalogue.session() as session:
        assert fills_due(session, site.settings, declared)[0] == []
    assert fill(site).copied == [] and site.store_row().fill_high_water_file_id == 0
    with site.site.catalogue.session() as session:  # the first is ten minutes old now
        session.execute(
            update(File)
            .where(File.id == first)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=11))
        )
        (due,) = fills_due(session, site.settings, declared)[0]
    assert due.newest == first
    assert fill(site).copied == ["older"]
    assert site.store_row().fill_high_water_file_id == first
