"""The integrity check tells the truth: a bad copy keeps it failed until repaired or dismissed.

Service level on SQLite and PostgreSQL (records, availability, events, the unreadable-store
guard), then the ``checksums_match`` check through Dagster: failed on two executions in a
row, an ERROR line, an observation on the book's partition, green again after a repair.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.catalogue.models import CorruptFile, Event, Instance, Store
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import BOOKS_PARTITIONS
from librarian_dagster.services import corrupt, integrity
from librarian_dagster.services.errors import Conflict, NotFound
from librarian_dagster.services.integrity import VerifyReport, verify_instances
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import CorruptionReason, CorruptionStatus
from tests.ingest_helpers import Site, dagster_resources, make_book, open_site

defs = build_definitions()


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def stored(site: Site, tmp_path: Path, name: str) -> Path:
    """Upload and ingest one small directory book; return its path in the store."""
    upload_id = site.upload(name, make_book(tmp_path / name.replace("/", "_")))
    assert site.ingest(upload_id).status == "stored"
    return site.store.path_for(name)


def rot(path: Path) -> None:
    target = path / "part0.dat"
    target.chmod(0o644)
    target.write_bytes(b"bit rot")


def records(site: Site) -> list[tuple[str, str, bool]]:
    """(status, reason, instance available) of every corrupt-copy record."""
    with site.catalogue.session() as session:
        rows = session.scalars(select(CorruptFile).order_by(CorruptFile.id)).all()
        return [
            (
                row.status.value,
                row.reason.value,
                session.get(Instance, row.instance_id).available if row.instance_id else False,
            )
            for row in rows
        ]


def events(site: Site, kind: str) -> int:
    with site.catalogue.session() as session:
        return session.scalar(select(func.count(Event.id)).where(Event.kind == kind)) or 0


def test_a_corrupt_copy_stays_unresolved_until_it_verifies_again(
    site: Site, tmp_path: Path
) -> None:
    path = stored(site, tmp_path, "a/good")
    stored(site, tmp_path, "a/other")
    first = verify_instances(site.catalogue, site.stores)
    assert first.passed and sorted(first.good) == ["a/good", "a/other"]

    original = tmp_path / "original"
    shutil.copytree(path, original)
    rot(path)
    second = verify_instances(site.catalogue, site.stores)
    assert not second.passed
    assert [(bad.name, bad.reason, bad.new) for bad in second.bad] == [
        ("a/good", CorruptionReason.MISMATCH, True)
    ]
    assert second.unresolved == 1 and second.unresolved_names == ["a/good"]
    assert records(site) == [("detected", "mismatch", False)]
    assert events(site, "copy_mismatch") == 1

    # The next execution reads it again: still bad, still failed, no second record or event.
    third = verify_instances(site.catalogue, site.stores)
    assert not third.passed and third.unresolved == 1
    assert [(bad.name, bad.new) for bad in third.bad] == [("a/good", False)]
    assert records(site) == [("detected", "mismatch", False)]
    assert events(site, "copy_mismatch") == 1

    # Restored by an operator: the next read closes the record and puts the copy back.
    shutil.rmtree(path)
    shutil.copytree(original, path)
    fourth = verify_instances(site.catalogue, site.stores)
    assert fourth.passed and fourth.repaired == ["a/good"] and fourth.unresolved == 0
    assert records(site) == [("repaired", "mismatch", True)]
    assert events(site, "copy_repaired") == 1


def test_an_open_record_fails_the_check_even_when_not_read_this_time(
    site: Site, tmp_path: Path
) -> None:
    rot(stored(site, tmp_path, "b/bad"))
    assert not verify_instances(site.catalogue, site.stores, names=["b/bad"]).passed
    stored(site, tmp_path, "b/fine")
    # Only the fine book is read, yet the record of the bad one keeps the result failed.
    report = verify_instances(site.catalogue, site.stores, names=["b/fine"])
    assert report.good == ["b/fine"] and not report.bad
    assert not report.passed and report.unresolved_names == ["b/bad"]


def test_missing_and_unreadable_copies_are_recorded_with_their_reason(
    site: Site, tmp_path: Path
) -> None:
    shutil.rmtree(stored(site, tmp_path, "c/gone"))
    inside = stored(site, tmp_path, "c/link") / "sub"
    inside.chmod(0o755)
    (inside / "escape").symlink_to("/etc/passwd")
    report = verify_instances(site.catalogue, site.stores)
    assert sorted((bad.name, bad.reason) for bad in report.bad) == [
        ("c/gone", CorruptionReason.MISSING),
        ("c/link", CorruptionReason.UNREADABLE),
    ]
    assert sorted(records(site)) == [
        ("detected", "missing", False),
        ("detected", "unreadable", False),
    ]


def test_an_unmounted_store_is_reported_and_nothing_is_marked_missing(
    site: Site, tmp_path: Path
) -> None:
    stored(site, tmp_path, "d/one")
    stored(site, tmp_path, "d/two")
    root = site.store.root
    moved = tmp_path / "unmounted"
    root.rename(moved)
    try:
        gone = verify_instances(site.catalogue, site.stores)
        # What an unmounted drive really leaves: an empty mount point, in which serve may
        # even have recreated the (empty) layout.
        root.mkdir()
        site.store.ensure_layout()
        empty = verify_instances(site.catalogue, site.stores)
    finally:
        shutil.rmtree(root)
        moved.rename(root)
    for report in (gone, empty):
        assert not report.passed and list(report.unreadable_stores) == ["main"]
        assert report.bad == [] and report.good == []
    assert "unmounted" in empty.unreadable_stores["main"]
    assert records(site) == []
    assert verify_instances(site.catalogue, site.stores).passed


@pytest.fixture
def two_stores(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    extra = '[[stores]]\nname = "drive"\nroot = "stores/drive"\nreserve_bytes = 0'
    return open_site(make_settings(database_url=database_url, extra_toml=extra))


def store_on(site: Site, tmp_path: Path, name: str, store: str) -> Path:
    """Ingest a book, then move its copy to ``store`` (as if it had been put there)."""
    path = stored(site, tmp_path, name)
    target = site.stores[store].path_for(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    with site.catalogue.session() as session:
        instance = session.scalars(select(Instance).join(Instance.file)).all()[-1]
        instance.store_id = session.scalar(select(Store.id).where(Store.name == store))
    return target


def test_an_unreadable_store_does_not_starve_the_others(two_stores: Site, tmp_path: Path) -> None:
    for index in range(3):
        store_on(two_stores, tmp_path, f"drive/{index}", "drive")
    rot(stored(two_stores, tmp_path, "main/bad"))
    drive = two_stores.stores["drive"]
    shutil.rmtree(drive.store_dir)  # unmounted
    report = verify_instances(two_stores.catalogue, two_stores.stores, limit=2)
    assert [bad.name for bad in report.bad] == ["main/bad"]  # found, though drive is older
    assert list(report.unreadable_stores) == ["drive"]


def test_a_store_dropped_from_the_config_with_copies_fails_the_check(
    two_stores: Site,
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
) -> None:
    store_on(two_stores, tmp_path, "kept/one", "drive")
    stored(two_stores, tmp_path, "main/one")
    only_main = open_site(make_settings(database_url=database_url))
    report = verify_instances(only_main.catalogue, only_main.stores)
    assert report.good == ["main/one"] and not report.passed
    assert "not in the configuration" in report.unreadable_stores["drive"]


def test_the_budget_is_kept_with_known_bad_copies(site: Site, tmp_path: Path) -> None:
    rot(stored(site, tmp_path, "h/bad"))
    stored(site, tmp_path, "h/fine")
    verify_instances(site.catalogue, site.stores, names=["h/bad"])
    report = verify_instances(site.catalogue, site.stores, limit=1)
    assert len(report.good) + len(report.bad) == 1


def test_two_executions_reading_one_bad_copy_open_one_record(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rot(stored(site, tmp_path, "i/bad"))
    both_read = threading.Barrier(2, timeout=30)
    real_read = integrity.read_copy

    def read_then_wait(*args: object) -> object:
        found = real_read(*args)
        both_read.wait()  # both have read the copy before either records it
        return found

    monkeypatch.setattr(integrity, "read_copy", read_then_wait)
    reports: list[VerifyReport] = []
    threads = [
        threading.Thread(
            target=lambda: reports.append(verify_instances(site.catalogue, site.stores))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(reports) == 2
    assert sorted(bad.new for report in reports for bad in report.bad) == [False, True]
    assert records(site) == [("detected", "mismatch", False)]
    assert events(site, "copy_mismatch") == 1


def test_an_operator_can_dismiss_a_record_and_the_copy_stays_out_of_service(
    site: Site, tmp_path: Path
) -> None:
    rot(stored(site, tmp_path, "e/bad"))
    verify_instances(site.catalogue, site.stores)
    with site.catalogue.session() as session:
        (record_id,) = session.scalars(select(CorruptFile.id)).all()
        assert corrupt.count_unresolved(session) == 1
    with site.catalogue.session() as session:
        record = corrupt.dismiss(session, record_id, "admin", "copy at site-b is the master")
        assert record.status is CorruptionStatus.DISMISSED
    with site.catalogue.session() as session:
        with pytest.raises(Conflict):
            corrupt.dismiss(session, record_id, "admin", "again")
        with pytest.raises(NotFound):
            corrupt.dismiss(session, record_id + 100, "admin", "nothing")
    assert records(site) == [("dismissed", "mismatch", False)]
    assert verify_instances(site.catalogue, site.stores).passed
    assert site.store.path_for("e/bad").exists()  # nothing deleted


def test_records_page_by_cursor_and_hide_resolved_ones_by_default(
    site: Site, tmp_path: Path
) -> None:
    for index in range(5):
        rot(stored(site, tmp_path, f"f/{index}"))
    verify_instances(site.catalogue, site.stores)
    with site.catalogue.session() as session:
        first_id = session.scalar(select(func.min(CorruptFile.id)))
        corrupt.dismiss(session, first_id, "admin", "known")
    with site.catalogue.session() as session:
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = corrupt.list_records(
                session, include_resolved=False, limit=2, cursor=cursor
            )
            seen += [row.file.name for row in page]
            if cursor is None:
                break
        assert seen == ["f/1", "f/2", "f/3", "f/4"]
        everything, _ = corrupt.list_records(session, include_resolved=True, limit=10, cursor=None)
        assert [row.file.name for row in everything] == [f"f/{i}" for i in range(5)]


def check_job(site: Site) -> dg.JobDefinition:
    job = dg.define_asset_job("check_job", selection=dg.AssetSelection.checks_for_assets(BOOK_KEY))
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[job],
        resources=dagster_resources(site),
    ).resolve_job_def("check_job")


def test_the_check_fails_on_every_execution_until_the_copy_is_repaired(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    path = stored(site, tmp_path, "g/book")
    instance.add_dynamic_partitions(BOOKS_PARTITIONS, ["g/book"])
    job = check_job(site)
    (evaluation,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert evaluation.passed

    original = tmp_path / "original"
    shutil.copytree(path, original)
    rot(path)
    for execution in range(2):
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed, f"execution {execution + 1} passed over a corrupt copy"
        assert not result.success, "the check's run was green over a corrupt copy"
        assert evaluation.metadata["unresolved corrupt copies"].value == 1
        errors = [
            event.message
            for event in instance.all_logs(result.run_id)
            if event.level >= 40 and "CORRUPT: g/book" in (event.message or "")
        ]
        assert errors, "the CORRUPT line was not logged at ERROR"

    observations = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=BOOK_KEY, asset_partitions=["g/book"]), limit=10
    ).records
    assert observations
    latest = observations[0].asset_observation
    assert latest is not None and latest.metadata["copy"].value == "corrupt"

    shutil.rmtree(path)
    shutil.copytree(original, path)
    (evaluation,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["repaired"].value == ["g/book"]
