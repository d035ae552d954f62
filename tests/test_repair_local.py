"""Repairing a corrupt copy from a good copy in another store of the same librarian: no
peer is asked, the bad copy is replaced only once the new one verifies, and a second copy
that is itself bad is never copied over. SQLite and PostgreSQL catalogues.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from librarian_dagster.catalogue.models import CorruptFile, File, Instance, Store
from librarian_dagster.services.integrity import Budget, verify_instances
from librarian_dagster.services.integrity_guard import GuardPolicy, trip
from librarian_dagster.services.integrity_repair import request_repairs
from librarian_dagster.services.peers import PeerLinks
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import CorruptionStatus
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.movers.copy import copy_and_hash
from librarian_dagster.storage.quarantine import QUARANTINE_DIRNAME
from tests.ingest_helpers import Site, open_site

BACKUP = (
    '[[stores]]\nname = "backup"\nroot = "stores/backup"\nreserve_bytes = 0\ningestable = false\n'
)


def no_peers(access: object) -> object:
    raise AssertionError("a peer was asked although a good copy is here")


NO_PEERS: PeerLinks = no_peers  # type: ignore[assignment]


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url, extra_toml=BACKUP))


def shelve_twice(site: Site, tmp_path: Path, name: str, directory: bool) -> None:
    """``name`` ingested into main, and a second copy recorded in the backup store."""
    source = tmp_path / "sources" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        (source / "sub").mkdir(parents=True)
        (source / "sub" / "a.dat").write_bytes(b"a" * 5000)
        (source / "b.dat").write_bytes(b"b" * 3000)
    else:
        source.write_bytes(b"f" * 7000)
    upload_id = site.upload(name, source)
    assert site.ingest(upload_id).status == "stored"
    backup = site.stores["backup"]
    staged = backup.stage(name, 0)
    copy_and_hash(site.store.path_for(name), staged.data_path)
    path = backup.commit(staged, name)
    with site.catalogue.session() as session:
        file = session.scalars(select(File).where(File.name == name)).one()
        store_id = session.scalars(select(Store.id).where(Store.name == "backup")).one()
        session.add(Instance(file_id=file.id, store_id=store_id, path=str(path)))


def rot(path: Path) -> None:
    victim = path if path.is_file() else next(p for p in sorted(path.rglob("*")) if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")


def find_bad(site: Site, *names: str) -> None:
    verify_instances(
        site.catalogue,
        site.stores,
        names=list(names),
        budget=Budget(max_books=100),
        settings=site.settings,
        policy=GuardPolicy(),
    )


def records(site: Site) -> list[tuple[str, str, CorruptionStatus]]:
    with site.catalogue.session() as session:
        return sorted(
            (row.file.name, row.store.name, row.status)
            for row in session.scalars(select(CorruptFile)).all()
        )


@pytest.mark.parametrize("directory", [False, True], ids=["file", "directory"])
def test_a_bad_copy_is_replaced_from_the_good_copy_in_another_store(
    site: Site, tmp_path: Path, directory: bool
) -> None:
    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory)
    checksum = hash_path(site.store.path_for(name))
    rot(site.store.path_for(name))
    find_bad(site, name)
    assert records(site) == [(name, "main", CorruptionStatus.DETECTED)]

    report = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    assert report.repaired == [(name, "backup")] and not report.lost and not report.requested
    assert records(site) == [(name, "main", CorruptionStatus.REPAIRED)]
    assert hash_path(site.store.path_for(name)) == checksum
    assert not site.store.path_for(name).stat().st_mode & 0o222  # sealed like any book
    assert list((site.store.root / QUARANTINE_DIRNAME).iterdir()) == []
    assert list(site.store.staging_dir.iterdir()) == []
    with site.catalogue.session() as session:
        available = session.scalars(select(Instance.available)).all()
        assert available == [True, True]
    find_bad(site, name)  # and the next pass finds both good
    assert records(site) == [(name, "main", CorruptionStatus.REPAIRED)]


def test_a_second_copy_that_does_not_verify_is_never_copied_over(
    site: Site, tmp_path: Path
) -> None:
    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory=False)
    rot(site.store.path_for(name))
    find_bad(site, name)
    rot(site.stores["backup"].path_for(name))  # gone bad too, not yet found by a pass
    rotten = site.store.path_for(name).read_bytes()

    report = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    assert report.repaired == []
    ((lost, why),) = report.lost
    assert lost == name and "store backup: its copy does not verify" in why
    assert site.store.path_for(name).read_bytes() == rotten  # kept, not replaced by junk
    assert list(site.store.staging_dir.iterdir()) == []
    # The bad source is recorded at once, as a pass would (out of service, its own record).
    assert records(site) == [
        (name, "backup", CorruptionStatus.DETECTED),
        (name, "main", CorruptionStatus.LOST),
    ]
    with site.catalogue.session() as session:
        assert session.scalars(select(Instance.available)).all() == [False, False]


@pytest.mark.parametrize("trouble", ["unreadable source", "no room to stage"])
def test_a_passing_problem_with_the_source_waits_and_is_never_lost(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trouble: str
) -> None:
    from librarian_dagster.services import integrity_repair_local
    from librarian_dagster.storage.errors import StoreFullError

    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory=False)
    rot(site.store.path_for(name))
    find_bad(site, name)

    def failing(*args: object, **kwargs: object) -> object:
        if trouble == "no room to stage":
            raise StoreFullError(7000, 0, "main")
        raise OSError(5, "Input/output error")

    if trouble == "no room to stage":
        monkeypatch.setattr(site.store, "stage", failing)
    else:
        monkeypatch.setattr(integrity_repair_local, "copy_and_hash", failing)
    report = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    assert report.lost == [] and [n for n, _ in report.waiting] == [name]
    assert records(site) == [(name, "main", CorruptionStatus.DETECTED)]  # asked again later
    monkeypatch.undo()
    with site.catalogue.session() as session:  # RETRY_AFTER later
        session.execute(update(CorruptFile).values(requested_at=None))
    again = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    assert again.repaired == [(name, "backup")]


def test_a_guarded_source_store_is_not_used(site: Site, tmp_path: Path) -> None:
    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory=False)
    rot(site.store.path_for(name))
    find_bad(site, name)
    with site.catalogue.session() as session:
        trip(session, "backup", "an operator distrusts this disk")
    report = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    assert report.repaired == [] and [n for n, _ in report.lost] == [name]


def test_a_crash_before_the_commit_leaves_a_good_copy_that_the_next_pass_closes(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian_dagster.services import integrity_repair_local
    from librarian_dagster.services.integrity_staging import clean_staging

    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory=True)
    checksum = hash_path(site.store.path_for(name))
    rot(site.store.path_for(name))
    find_bad(site, name)

    def crash(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt("killed between the rename and the commit")

    monkeypatch.setattr(integrity_repair_local, "repair_recorded", crash)
    with pytest.raises(KeyboardInterrupt):
        request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    monkeypatch.undo()
    assert hash_path(site.store.path_for(name)) == checksum  # the good copy is in place
    assert records(site) == [(name, "main", CorruptionStatus.DETECTED)]
    (kept,) = clean_staging(site.catalogue, site.store, min_age=-1).reported
    assert kept[0].startswith(f"{QUARANTINE_DIRNAME}/")  # the bad copy: kept, reported

    find_bad(site, name)  # the next pass re-reads known-bad copies first
    assert records(site) == [(name, "main", CorruptionStatus.REPAIRED)]


def test_a_source_holding_something_unsafe_is_recorded_and_the_run_goes_on(
    site: Site, tmp_path: Path
) -> None:
    name = "2026/12/07/book"
    shelve_twice(site, tmp_path, name, directory=True)
    rot(site.store.path_for(name))
    find_bad(site, name)
    source = site.stores["backup"].path_for(name)
    source.chmod(0o755)
    (source / "link").symlink_to("/etc/passwd")  # not a book's entry: never copied
    report = request_repairs(site.catalogue, site.settings, NO_PEERS, stores=site.stores)
    ((lost, why),) = report.lost
    assert lost == name and "store backup: its copy cannot be read as a book" in why
    assert records(site) == [
        (name, "backup", CorruptionStatus.DETECTED),
        (name, "main", CorruptionStatus.LOST),
    ]
