"""Drop-folder ingest: finished books in an inbox are staged once, half-written ones never."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import Event, IncomingTransfer
from librarian_dagster.services import inbox as inbox_module
from librarian_dagster.services.inbox import InboxBook, find_books, register_books
from librarian_dagster.services.ingest import MAX_ATTEMPTS, ingest_transfer
from librarian_dagster.services.ingest_launcher import InlineIngestLauncher
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferKind
from librarian_dagster.storage.checksums import hash_path
from tests.ingest_helpers import Site, open_site


def inbox_site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    **extra: object,
) -> Site:
    lines = [f'inbox = "{tmp_path / "inbox"}"'] + [f"{k} = {v}" for k, v in extra.items()]
    # The [[stores]] table is the last one in the generated file: these keys extend it.
    settings = make_settings(database_url=database_url, extra_toml="\n".join(lines))
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return open_site(settings)


def scan(site: Site) -> list[str]:
    """What the ingest sensor and its run do together: list the books, then register them."""
    return register_books(site.catalogue, site.settings, find_books(site.settings)).lines


def inbox_transfers(site: Site) -> list[tuple[int, str, str]]:
    with site.catalogue.session() as session:
        rows = session.execute(
            select(IncomingTransfer.id, IncomingTransfer.name, IncomingTransfer.status)
            .where(IncomingTransfer.kind == TransferKind.INBOX)
            .order_by(IncomingTransfer.id)
        ).all()
    return [(r.id, r.name, r.status.value) for r in rows]


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> Site:
    return inbox_site(make_settings, database_url, tmp_path, inbox_depth=2)


def test_book_written_slowly_is_ingested_once_after_its_marker(site: Site, tmp_path: Path) -> None:
    book = tmp_path / "inbox" / "2026-11-25" / "obs_0001"
    book.mkdir(parents=True)
    for i in range(3):
        (book / f"chunk{i}.dat").write_bytes(os.urandom(5000))
        assert scan(site) == []  # still being written
    assert inbox_transfers(site) == []
    expected = hash_path(book)
    (tmp_path / "inbox" / "2026-11-25" / "obs_0001.done").write_text("")
    lines = scan(site)
    assert lines == ["inbox 2026-11-25/obs_0001: staged"]
    ((transfer_id, name, status),) = inbox_transfers(site)
    assert (name, status) == ("2026-11-25/obs_0001", "staged")
    assert not book.exists() and not (book.parent / "obs_0001.done").exists()
    assert scan(site) == []  # nothing twice
    outcome = site.ingest(transfer_id)
    assert outcome.status == "stored" and outcome.checksum == str(expected)
    assert hash_path(site.store.path_for("2026-11-25/obs_0001")) == expected


def test_marker_checksum_is_verified_and_a_mismatch_hands_the_data_back(
    site: Site, tmp_path: Path
) -> None:
    day = tmp_path / "inbox" / "day"
    book = day / "obs"
    book.mkdir(parents=True)
    (book / "a.dat").write_bytes(b"original bytes")
    content = sorted(p.name for p in book.iterdir())
    (day / "obs.done").write_text("xxh3_128:" + "f" * 32 + "\n")
    scan(site)
    ((transfer_id, _, _),) = inbox_transfers(site)
    outcome = site.ingest(transfer_id)
    assert outcome.status == "failed" and "checksum mismatch" in (outcome.reason or "")
    assert sorted(p.name for p in book.iterdir()) == content  # the data is left, in the inbox
    assert (book / "a.dat").read_bytes() == b"original bytes"
    assert "checksum mismatch" in (day / "obs.failed").read_text()
    assert not (day / "obs.done").exists()
    assert site.store_listing() == [] and site.staging_listing() == []
    assert scan(site) == []  # not retried until a new .done


def test_marker_with_the_right_checksum(site: Site, tmp_path: Path) -> None:
    day = tmp_path / "inbox" / "day"
    book = day / "single.dat"
    day.mkdir(parents=True)
    book.write_bytes(os.urandom(10_000))
    (day / "single.dat.done").write_text(f"{hash_path(book, 'sha256')}\n")
    scan(site)
    ((transfer_id, _, _),) = inbox_transfers(site)
    outcome = site.ingest(transfer_id)
    assert (
        outcome.status == "stored" and outcome.checksum and outcome.checksum.startswith("sha256:")
    )


def test_quiet_period_without_marker(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path, inbox_quiet_seconds=60)
    book = tmp_path / "inbox" / "quiet_book"
    book.mkdir()
    (book / "x").write_bytes(b"1")
    assert scan(site) == []  # changed just now
    old = time.time() - 120
    for path in (book / "x", book):
        os.utime(path, (old, old))
    assert scan(site) == ["inbox quiet_book: staged"]


def test_interrupted_registration_is_repaired(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = tmp_path / "inbox" / "day"
    book = day / "obs"
    book.mkdir(parents=True)
    (book / "a").write_bytes(b"abc")
    (day / "obs.done").write_text("")

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("killed between recording and moving")

    monkeypatch.setattr(inbox_module.os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        scan(site)
    monkeypatch.undo()
    assert [t[2] for t in inbox_transfers(site)] == ["initiated"] and book.exists()
    scan(site)
    assert [t[2] for t in inbox_transfers(site)] == ["staged"] and not book.exists()


def test_already_catalogued_name_is_refused_and_left(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"first")
    assert site.ingest(site.upload("day/obs", source)).status == "stored"
    day = tmp_path / "inbox" / "day"
    day.mkdir(parents=True)
    (day / "obs").write_bytes(b"second")
    (day / "obs.done").write_text("")
    lines = scan(site)
    assert lines and "already catalogued" in lines[0]
    assert (day / "obs").read_bytes() == b"second" and (day / "obs.failed").exists()
    assert inbox_transfers(site) == []


# -- a refused inbox book is never deleted (the three ways it used to be) ----------------


def events_of(site: Site, kind: str) -> list[Event]:
    with site.catalogue.session() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind)))


def registered_with_wrong_checksum(site: Site, tmp_path: Path, content: bytes) -> tuple[int, Path]:
    """An inbox book staged with a marker whose checksum it does not have."""
    day = tmp_path / "inbox" / "day"
    day.mkdir(parents=True, exist_ok=True)
    (day / "obs").write_bytes(content)
    (day / "obs.done").write_text("xxh3_128:" + "f" * 32 + "\n")
    assert scan(site) == ["inbox day/obs: staged"]
    ((transfer_id, _, _),) = inbox_transfers(site)
    with site.catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id)
        assert transfer is not None
        return transfer_id, Path(transfer.staging_path)


def test_a_new_book_of_that_name_in_the_inbox_keeps_both(site: Site, tmp_path: Path) -> None:
    """The producer wrote a new book of the same name meanwhile: neither copy is lost."""
    transfer_id, staged = registered_with_wrong_checksum(site, tmp_path, b"first attempt")
    (tmp_path / "inbox" / "day" / "obs").write_bytes(b"the producer's new book")
    outcome = site.ingest(transfer_id)
    assert outcome.status == "failed" and "checksum mismatch" in (outcome.reason or "")
    assert (tmp_path / "inbox" / "day" / "obs").read_bytes() == b"the producer's new book"
    assert staged.read_bytes() == b"first attempt"  # ours stays in staging
    (event,) = events_of(site, "failed_data_kept")
    assert str(staged) in event.message
    assert "a new book of that name is in the inbox" in event.message
    assert not (tmp_path / "inbox" / "day" / "obs.failed").exists()


def test_a_store_without_an_inbox_any_more_keeps_the_book_in_staging(
    make_settings: Callable[..., LibrarianSettings], site: Site, tmp_path: Path
) -> None:
    transfer_id, staged = registered_with_wrong_checksum(site, tmp_path, b"producer bytes")
    without_inbox = make_settings(database_url=site.settings.database_url)
    assert without_inbox.store("main").inbox is None
    outcome = ingest_transfer(
        site.catalogue,
        site.stores,
        transfer_id,
        run_id="run-1",
        run_is_active=lambda _: False,
        settings=without_inbox,
    )
    assert outcome.status == "failed"
    assert staged.read_bytes() == b"producer bytes"
    (event,) = events_of(site, "failed_data_kept")
    assert "no inbox any more" in event.message


def test_every_launcher_hands_a_refused_book_back(site: Site, tmp_path: Path) -> None:
    """The inline launcher (tests, single-process tools) used to ingest without settings."""
    transfer_id, _ = registered_with_wrong_checksum(site, tmp_path, b"inline bytes")
    launcher = InlineIngestLauncher(site.catalogue, site.stores, site.settings)
    launcher.request([StagedItem(transfer_id, "day/obs", len(b"inline bytes"))])
    deadline = time.monotonic() + 30
    while inbox_transfers(site)[0][2] != "failed":
        assert time.monotonic() < deadline, "the launcher did not ingest"
        time.sleep(0.02)
    day = tmp_path / "inbox" / "day"
    assert (day / "obs").read_bytes() == b"inline bytes"
    assert "checksum mismatch" in (day / "obs.failed").read_text()
    assert site.staging_listing() == []


def test_a_refused_book_waits_for_a_new_marker_even_with_a_quiet_period(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path, inbox_quiet_seconds=60)
    book = tmp_path / "inbox" / "linked"
    book.mkdir()
    (book / "data").write_bytes(b"1")
    (book / "link").symlink_to("data")
    old = time.time() - 120
    for path in (book / "data", book / "link", book):
        os.utime(path, (old, old), follow_symlinks=False)
    assert scan(site) == ["inbox linked: staged"]
    ((transfer_id, _, _),) = inbox_transfers(site)
    assert site.ingest(transfer_id).status == "failed"
    assert "symlink" in (tmp_path / "inbox" / "linked.failed").read_text()
    os.utime(book, (old, old))
    assert find_books(site.settings) == []  # not retried every quiet period
    (tmp_path / "inbox" / "linked.done").write_text("")
    assert find_books(site.settings) == [InboxBook("main", "linked")]


@pytest.mark.parametrize("finished_by", ["marker", "quiet period"])
def test_the_sensors_part_moves_and_walks_nothing(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    finished_by: str,
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path, inbox_depth=2, inbox_quiet_seconds=60)
    book = tmp_path / "inbox" / "day" / "obs"
    (book / "deep").mkdir(parents=True)
    (book / "deep" / "a").write_bytes(b"a")
    if finished_by == "marker":
        (book.parent / "obs.done").write_text("")
    else:
        old = time.time() - 120
        os.utime(book, (old, old))
    before = sorted(str(p) for p in (tmp_path / "inbox").rglob("*"))

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the sensor's part walked into a book or moved one")

    for name in ("newest_mtime_and_size", "tree_size", "walk"):
        monkeypatch.setattr(inbox_module, name, forbidden, raising=False)
    monkeypatch.setattr(inbox_module.os, "rename", forbidden)
    assert find_books(site.settings) == [InboxBook("main", "day/obs")]
    assert inbox_module.not_pending(site.catalogue, [InboxBook("main", "day/obs")])
    monkeypatch.undo()
    assert sorted(str(p) for p in (tmp_path / "inbox").rglob("*")) == before
    assert inbox_transfers(site) == []


def interrupted_registration(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A registration killed after step 1: the transfer is recorded, the book not moved."""
    day = tmp_path / "inbox" / "day"
    day.mkdir(parents=True, exist_ok=True)
    (day / "obs").write_bytes(b"abc")
    (day / "obs.done").write_text("")

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("killed between recording and moving")

    with monkeypatch.context() as patch:
        patch.setattr(inbox_module.os, "rename", killed)
        with pytest.raises(KeyboardInterrupt):
            scan(site)
    ((transfer_id, _, status),) = inbox_transfers(site)
    assert status == "initiated" and inbox_module.has_interrupted(site.catalogue)
    return transfer_id


def test_a_late_repair_never_undoes_a_finished_registration(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two inbox runs: B read the transfer as interrupted, A finished and stored it since."""
    transfer_id = interrupted_registration(site, tmp_path, monkeypatch)
    book = tmp_path / "inbox" / "day" / "obs"
    assert scan(site) == ["inbox day/obs: staged"]  # run A repairs it...
    assert site.ingest(transfer_id).status == "stored"  # ...and stores it
    assert inbox_module._move_in(site.catalogue, transfer_id, book) == (None, None)  # B, late
    assert inbox_transfers(site) == [(transfer_id, "day/obs", "stored")]
    assert not inbox_module.has_interrupted(site.catalogue)


def test_a_repair_without_an_inbox_ends_the_registration(
    make_settings: Callable[..., LibrarianSettings],
    site: Site,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transfer_id = interrupted_registration(site, tmp_path, monkeypatch)
    without_inbox = make_settings(database_url=site.settings.database_url)
    done = register_books(site.catalogue, without_inbox, [])
    assert done.staged == [] and "no inbox any more" in done.lines[0]
    assert inbox_transfers(site) == [(transfer_id, "day/obs", "failed")]
    assert (tmp_path / "inbox" / "day" / "obs").read_bytes() == b"abc"  # left where it was
    assert not inbox_module.has_interrupted(site.catalogue)  # no inbox run forever


def test_a_book_that_keeps_crashing_runs_goes_back_to_its_producer(
    site: Site, tmp_path: Path
) -> None:
    day = tmp_path / "inbox" / "day"
    day.mkdir(parents=True)
    (day / "obs").write_bytes(b"crashes every run")
    (day / "obs.done").write_text("")
    ((item,),) = [register_books(site.catalogue, site.settings, find_books(site.settings)).staged]
    with site.catalogue.session() as session:
        transfer = session.get(IncomingTransfer, item.transfer_id)
        assert transfer is not None
        transfer.attempts = MAX_ATTEMPTS
    outcome = site.ingest(item.transfer_id)
    assert outcome.status == "failed" and "gave up" in (outcome.reason or "")
    assert (day / "obs").read_bytes() == b"crashes every run"
    assert "gave up" in (day / "obs.failed").read_text()
    (event,) = events_of(site, "ingest_gave_up")
    assert event.subject == "day/obs"
