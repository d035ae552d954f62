"""Uploads and ingest through the services, on SQLite and PostgreSQL.

Every refused request is checked to change nothing: no File row, nothing new in the store
area, and (where it never got one) no staging directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from librarian_dagster.catalogue.models import Event, File, Instance
from librarian_dagster.services import ingest as ingest_module
from librarian_dagster.services import uploads
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    TooLarge,
)
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage import local_store, posix
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.errors import StagingNotFoundError
from tests.ingest_helpers import UPLOADER, Site, make_book, open_site, tree_size


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def file_count(site: Site) -> int:
    with site.catalogue.session() as session:
        return session.scalar(select(func.count()).select_from(File)) or 0


def test_file_and_directory_are_stored_read_only(site: Site, tmp_path: Path) -> None:
    single = tmp_path / "single.dat"
    single.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    book = make_book(tmp_path)
    for name, source in (("2026/11/25/single.dat", single), ("2026/11/25/book_0001", book)):
        upload_id = site.upload(name, source)
        outcome = site.ingest(upload_id)
        assert outcome.status == "stored", outcome
        stored = site.store.path_for(name)
        assert hash_path(stored) == hash_path(source) and str(hash_path(source)) == outcome.checksum
        assert not os.stat(stored).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        assert site.status(upload_id) == ("stored", None)
    with site.catalogue.session() as session:
        rows = session.execute(
            select(File.name, File.size, File.is_directory).order_by(File.id)
        ).all()
        assert [tuple(r) for r in rows] == [
            ("2026/11/25/single.dat", tree_size(single), False),
            ("2026/11/25/book_0001", tree_size(book), True),
        ]
        assert session.scalar(select(func.count()).select_from(Instance)) == 2
    assert site.staging_listing() == []


def test_wrong_checksum_fails_and_removes_staged_data(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"real bytes")
    upload_id = site.stage("bad/checksum", source)
    site.copy_in(upload_id, source)
    site.commit(upload_id, "xxh3_128:" + "0" * 32)
    outcome = site.ingest(upload_id)
    assert outcome.status == "failed" and "checksum mismatch" in (outcome.reason or "")
    status, reason = site.status(upload_id)
    assert status == "failed" and "checksum mismatch" in (reason or "")
    assert file_count(site) == 0 and site.store_listing() == [] and site.staging_listing() == []


def test_size_that_lies_is_refused_at_commit(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"12345")
    with site.catalogue.session() as session:
        transfer, _ = uploads.stage_upload(
            session,
            site.stores,
            name="lying/size",
            size=4,
            checksum=None,
            principal=UPLOADER,
            source="s",
            ingest=site.settings.ingest,
        )
        upload_id = transfer.id
    site.copy_in(upload_id, source)
    with pytest.raises(InvalidRequest, match="size mismatch"):
        site.commit(upload_id, str(hash_path(source)))
    assert site.status(upload_id) == ("initiated", None)
    assert file_count(site) == 0 and site.store_listing() == []


def test_duplicate_name_conflicts(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    assert site.ingest(site.upload("dup/name", source)).status == "stored"
    before = site.staging_listing()
    with pytest.raises(Conflict, match="already catalogued"):
        site.stage("dup/name", source)
    assert site.staging_listing() == before and file_count(site) == 1


@pytest.mark.parametrize(
    "name", ["../x", "/etc/x", "a/../../x", "a//b", "a\x00b", "x" * 300, "", "a,b", "a/./b"]
)
def test_traversal_and_bad_names_change_nothing(site: Site, tmp_path: Path, name: str) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="invalid name"):
        site.stage(name, source)
    assert site.staging_listing() == [] and site.store_listing() == [] and file_count(site) == 0


def test_cancelled_upload_cannot_be_committed(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.stage("cancel/me", source)
    site.copy_in(upload_id, source)
    uploads.cancel_upload(site.catalogue, site.stores, upload_id, UPLOADER)
    assert site.staging_listing() == []
    with pytest.raises(Conflict, match="already cancelled"):
        site.commit(upload_id, str(hash_path(source)))
    assert site.status(upload_id)[0] == "cancelled" and file_count(site) == 0


def test_commit_after_staging_dir_was_deleted(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.stage("vanished/staging", source)
    site.store.discard_staging(site.staging_path(upload_id).parent.name)
    with pytest.raises(Conflict, match="staging directory"):
        site.commit(upload_id, str(hash_path(source)))
    assert site.status(upload_id) == ("initiated", None)
    assert file_count(site) == 0 and site.store_listing() == []


def test_second_commit_and_unknown_id(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.upload("commit/twice", source)
    with pytest.raises(Conflict, match="already staged"):
        site.commit(upload_id, str(hash_path(source)))
    with pytest.raises(NotFound):
        site.commit(987654, None)
    other = Principal("mallory", UserLevel.READ_APPEND)
    with pytest.raises(NotFound), site.catalogue.session() as session:
        uploads.get_upload(session, upload_id, other)  # not yours: not found, no leak


def test_commit_without_data_or_checksum(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.stage("no/data", source)
    with pytest.raises(InvalidRequest, match="nothing is staged"):
        site.commit(upload_id, str(hash_path(source)))
    site.copy_in(upload_id, source)
    with pytest.raises(InvalidRequest, match="checksum is required"):
        site.commit(upload_id, None)
    with pytest.raises(InvalidRequest, match="invalid checksum"):
        site.commit(upload_id, "crc32:1234")
    assert site.status(upload_id) == ("initiated", None)


def test_second_stage_of_a_pending_name_resumes(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    first = site.stage("resume/me", source)
    assert site.stage("resume/me", source) == first
    assert len(site.staging_listing()) == 1
    other = Principal("bob", UserLevel.READ_APPEND)
    with pytest.raises(Conflict, match="someone else"), site.catalogue.session() as session:
        uploads.stage_upload(
            session,
            site.stores,
            name="resume/me",
            size=3,
            checksum=None,
            principal=other,
            source="s",
            ingest=site.settings.ingest,
        )


def test_no_room_is_507_and_creates_nothing(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = open_site(make_settings(database_url=database_url))
    source = tmp_path / "f"
    source.write_bytes(b"x")
    # A fixed amount of free space: the real one moves while other processes write and delete.
    monkeypatch.setattr(local_store.LocalStore, "free_bytes", lambda _store: 1_000_000)
    with pytest.raises(InsufficientStorage), site.catalogue.session() as session:
        uploads.stage_upload(
            session,
            site.stores,
            name="too/big",
            size=site.store.free_bytes() + 1,
            checksum=None,
            principal=UPLOADER,
            source="s",
            ingest=site.settings.ingest,
        )
    assert site.staging_listing() == []
    with (
        pytest.raises(TooLarge, match="upload limit"),
        site.catalogue.session() as session,
    ):
        uploads.stage_upload(
            session,
            site.stores,
            name="over/limit",
            size=11,
            checksum=None,
            principal=UPLOADER,
            source="s",
            ingest=site.settings.ingest.model_copy(update={"max_upload_bytes": 10}),
        )
    assert site.staging_listing() == []
    with site.catalogue.session() as session:  # what exactly fits is taken
        _, created = uploads.stage_upload(
            session,
            site.stores,
            name="just/fits",
            size=site.store.free_bytes(),
            checksum=None,
            principal=UPLOADER,
            source="s",
            ingest=site.settings.ingest.model_copy(update={"max_reserved_fraction_per_user": 1.0}),
        )
    assert created and len(site.staging_listing()) == 1


def test_crash_before_rename_is_recovered_by_a_rerun(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = make_book(tmp_path)
    upload_id = site.upload("crash/before", book)

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(posix, "rename_noreplace", killed)
    with pytest.raises(KeyboardInterrupt):
        site.ingest(upload_id, run_id="run-1")
    monkeypatch.undo()
    assert site.status(upload_id)[0] == "verifying"
    assert site.store_listing() == [] and file_count(site) == 0
    # While run-1 is alive, another run leaves it alone; once it is gone, a rerun finishes.
    assert site.ingest(upload_id, run_id="run-2", alive=frozenset({"run-1"})).status == "skipped"
    outcome = site.ingest(upload_id, run_id="run-2")
    assert outcome.status == "stored"
    assert hash_path(site.store.path_for("crash/before")) == hash_path(book)
    assert file_count(site) == 1


def test_crash_after_rename_before_commit_is_recovered(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = make_book(tmp_path)
    upload_id = site.upload("crash/after", book)

    def killed(*_args: object, **_kwargs: object) -> bool:
        raise KeyboardInterrupt("killed after the rename")

    monkeypatch.setattr(ingest_module, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        site.ingest(upload_id, run_id="run-1")
    monkeypatch.undo()
    assert site.store.exists("crash/after") and file_count(site) == 0
    assert site.status(upload_id)[0] == "verifying"
    outcome = site.ingest(upload_id, run_id="run-2")
    assert outcome.status == "stored"
    with site.catalogue.session() as session:
        file = session.scalars(select(File)).one()
        assert file.checksum == str(hash_path(book))
    assert site.staging_listing() == []


def test_book_moved_into_the_store_by_another_run_mid_commit_is_not_failed(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs on one book (a run wrongly judged dead): the one that finds its staged data
    gone mid-commit checks the store instead of failing a book that is stored."""
    book = make_book(tmp_path)
    upload_id = site.upload("race/book", book)
    original = local_store.LocalStore.commit

    def commit_by_the_other_run(store: local_store.LocalStore, staged, name: str) -> Path:
        original(store, staged, name)  # the other run renamed it first...
        raise StagingNotFoundError("staging directory is gone")  # ...so ours finds nothing

    monkeypatch.setattr(local_store.LocalStore, "commit", commit_by_the_other_run)
    outcome = site.ingest(upload_id, run_id="run-1")
    assert outcome.status == "stored", outcome
    assert site.status(upload_id)[0] == "stored"
    assert file_count(site) == 1 and site.store.exists("race/book")


def test_ingest_of_a_final_transfer_is_skipped(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.upload("once/only", source)
    assert site.ingest(upload_id).status == "stored"
    again = site.ingest(upload_id, run_id="run-9")
    assert again.status == "skipped" and "already stored" in (again.reason or "")
    assert file_count(site) == 1


def test_symlink_in_staged_book_fails_cleanly(site: Site, tmp_path: Path) -> None:
    book = make_book(tmp_path)
    upload_id = site.upload("has/symlink", book)
    os.symlink("/etc/passwd", site.staging_path(upload_id) / "sub" / "evil")
    outcome = site.ingest(upload_id)
    assert outcome.status == "failed"
    assert file_count(site) == 0 and site.store_listing() == [] and site.staging_listing() == []


def test_a_refused_upload_is_removed_only_after_its_failure_committed(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a big tree must not hold the catalogue's write lock (all of SQLite's)."""
    book = make_book(tmp_path)
    upload_id = site.stage("refused/tree", book)
    site.copy_in(upload_id, book)
    site.commit(upload_id, "xxh3_128:" + "1" * 32)
    seen: list[str] = []
    real_discard = uploads.discard

    def discard(staging: object) -> None:
        # Another connection can write now, and sees the failure already committed.
        with site.catalogue.session() as session:
            seen.append(uploads.get_upload(session, upload_id, UPLOADER).status.value)
        real_discard(staging)  # type: ignore[arg-type]

    monkeypatch.setattr(uploads, "discard", discard)
    assert site.ingest(upload_id).status == "failed"
    assert seen == ["failed"] and site.staging_listing() == []


def test_a_refused_upload_that_cannot_be_removed_is_still_failed_and_said(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"payload")
    upload_id = site.stage("refused/stuck", source)
    site.copy_in(upload_id, source)
    site.commit(upload_id, "xxh3_128:" + "1" * 32)

    def broken(_staging: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(uploads, "discard", broken)
    assert site.ingest(upload_id).status == "failed"
    assert site.status(upload_id)[0] == "failed" and len(site.staging_listing()) == 1
    with site.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "staging_not_removed"))
        assert "Permission denied" in event.message and event.subject == "refused/stuck"
