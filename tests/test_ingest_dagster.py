"""The Dagster side of ingest: the ingest_books job, the book asset's events, the sensor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import update

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.ingest import ingest_run_config
from librarian_dagster.jobs.names import BOOKS_PARTITIONS, BOOKS_TAG, INBOX_TAG, SOURCE_TAG
from librarian_dagster.sensors.ingest import ingest_sensor
from librarian_dagster.services import inbox
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.checksums import hash_path
from tests.ingest_helpers import Site, dagster_resources, make_book, open_site

defs = build_definitions()


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def run_ingest(
    instance: dg.DagsterInstance, site: Site, ids: list[int]
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("ingest_books")
    return job.execute_in_process(
        run_config=ingest_run_config(ids),
        instance=instance,
        resources=dagster_resources(site),
        raise_on_error=False,
    )


def test_job_materializes_stored_books_and_drops_failed_partitions(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    good = site.upload("2026/11/25/good", make_book(tmp_path, "good"))
    bad_source = tmp_path / "bad.dat"
    bad_source.write_bytes(b"payload")
    bad = site.stage("2026/11/25/bad", bad_source)
    site.copy_in(bad, bad_source)
    site.commit(bad, "xxh3_128:" + "1" * 32)
    instance.add_dynamic_partitions(BOOKS_PARTITIONS, ["2026/11/25/good", "2026/11/25/bad"])

    result = run_ingest(instance, site, [good, bad])
    # A run that refused a book fails, after recording what it stored; its failure says which.
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None and "1 refused" in (user_failure.description or "")
    (refusal,) = user_failure.metadata["refused"].value
    assert refusal["name"] == "2026/11/25/bad" and "checksum" in refusal["reason"]
    assert instance.get_dynamic_partitions(BOOKS_PARTITIONS) == ["2026/11/25/good"]
    assert instance.get_materialized_partitions(BOOK_KEY) == {"2026/11/25/good"}
    event = instance.get_latest_materialization_event(BOOK_KEY)
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert {"size", "checksum", "store", "path", "seconds", "MB/s"} <= set(metadata)
    assert metadata["store"].value == "main"
    assert site.status(bad)[0] == "failed"


def test_job_is_safe_to_rerun(site: Site, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    upload_id = site.upload("rerun/book", make_book(tmp_path))
    instance.add_dynamic_partitions(BOOKS_PARTITIONS, ["rerun/book"])
    assert run_ingest(instance, site, [upload_id]).success
    assert run_ingest(instance, site, [upload_id]).success  # nothing left to do
    assert site.status(upload_id)[0] == "stored"
    records = instance.fetch_materializations(BOOK_KEY, limit=10).records
    assert len(records) == 1


def test_sensor_groups_requests_and_keeps_a_high_water_mark(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    site = open_site(
        make_settings(database_url=database_url, extra_toml="[ingest]\nmax_books_per_run = 2")
    )
    source = tmp_path / "f"
    source.write_bytes(b"x")
    ids = [site.upload(f"burst/{i:03d}", source) for i in range(5)]
    context = dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    result = ingest_sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert [
        r.run_config["ops"]["verify_and_store"]["config"]["transfer_ids"]
        for r in result.run_requests
    ] == [
        ids[0:2],
        ids[2:4],
        ids[4:5],
    ]
    assert not result.dynamic_partitions_requests  # added directly, in one call
    assert instance.get_dynamic_partitions(BOOKS_PARTITIONS) == [f"burst/{i:03d}" for i in range(5)]
    assert result.cursor == str(ids[-1])
    # Asked once: the next tick has nothing to do.
    again = ingest_sensor(
        dg.build_sensor_context(
            instance=instance, resources=dagster_resources(site), cursor=result.cursor
        )
    )
    assert not again.run_requests


def test_sensor_repairs_overdue_and_orphaned_transfers(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    overdue = site.upload("repair/overdue", source)
    orphan = site.upload("repair/orphan", source)
    with site.catalogue.session() as session:
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        session.execute(
            update(IncomingTransfer)
            .where(IncomingTransfer.id == overdue)
            .values(launched_at=long_ago)
        )
        session.execute(
            update(IncomingTransfer)
            .where(IncomingTransfer.id == orphan)
            .values(status="verifying", run_id="a-run-that-died", launched_at=long_ago)
        )
    result = ingest_sensor(
        dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    )
    requested = [
        i
        for r in result.run_requests
        for i in r.run_config["ops"]["verify_and_store"]["config"]["transfer_ids"]
    ]
    assert requested == [overdue, orphan]
    # And the job then finishes the orphan even though it is marked verifying.
    assert run_ingest(instance, site, requested).success
    assert site.status(orphan)[0] == "stored" and site.status(overdue)[0] == "stored"


def inbox_site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    ingest: str = "",
) -> Site:
    """A site whose store has an inbox; ``ingest``: lines of an ``[ingest]`` section."""
    (tmp_path / "inbox").mkdir()
    extra = f'inbox = "{tmp_path / "inbox"}"' + (f"\n[ingest]\n{ingest}" if ingest else "")
    return open_site(make_settings(database_url=database_url, extra_toml=extra))


def inbox_requests(result: dg.SensorResult | dg.SkipReason) -> list[dg.RunRequest]:
    if not isinstance(result, dg.SensorResult):
        return []
    return [r for r in result.run_requests or [] if INBOX_TAG in r.tags]


def test_the_sensor_finds_inbox_books_and_its_run_stores_them(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path)
    book = make_book(tmp_path / "inbox", "obs_0001")
    (tmp_path / "inbox" / "obs_0001.done").write_text("")
    expected = hash_path(book)
    result = ingest_sensor(
        dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    )
    (request,) = inbox_requests(result)
    config = request.run_config["ops"]["verify_and_store"]["config"]
    assert config == {
        "transfer_ids": [],
        "register_inbox": True,
        "inbox_books": [{"store": "main", "name": "obs_0001"}],
    }
    assert request.tags[SOURCE_TAG] == "inbox"
    assert book.is_dir() and (tmp_path / "inbox" / "obs_0001.done").exists()  # moved nothing
    run = defs.resolve_job_def("ingest_books").execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources=dagster_resources(site),
        tags=request.tags,
    )
    assert run.success
    assert not book.exists() and hash_path(site.store.path_for("obs_0001")) == expected
    assert instance.get_materialized_partitions(BOOK_KEY) == {"obs_0001"}
    # Registered and stored by that run: nothing is left for the next tick.
    again = ingest_sensor(
        dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    )
    assert isinstance(again, dg.SkipReason) or not again.run_requests


def add_inbox_run(
    instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus
) -> None:
    instance.add_run(
        dg.DagsterRun(
            job_name="ingest_books",
            run_id=str(uuid.uuid4()),
            status=status,
            tags=dict(request.tags),
        )
    )


def test_the_sensor_asks_once_for_the_same_inbox_books(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path)
    (tmp_path / "inbox" / "a.dat").write_bytes(b"a")
    (tmp_path / "inbox" / "a.dat.done").write_text("")

    def tick() -> list[dg.RunRequest]:
        return inbox_requests(
            ingest_sensor(
                dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
            )
        )

    (first,) = tick()
    add_inbox_run(instance, first, dg.DagsterRunStatus.STARTED)
    (tmp_path / "inbox" / "b.dat").write_bytes(b"b")
    (tmp_path / "inbox" / "b.dat.done").write_text("")
    assert tick() == []  # one inbox run at a time: b waits for it
    (running,) = instance.get_runs()
    instance.report_run_failed(running, "as if it died before registering anything")
    (second,) = tick()  # a and b now
    assert len(second.run_config["ops"]["verify_and_store"]["config"]["inbox_books"]) == 2
    add_inbox_run(instance, second, dg.DagsterRunStatus.FAILURE)
    assert tick() == []  # the same books are not asked for again at once


def test_an_interrupted_inbox_registration_gets_a_run_that_finishes_it(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path)
    (tmp_path / "inbox" / "obs").write_bytes(b"interrupted")
    (tmp_path / "inbox" / "obs.done").write_text("")
    # A run killed between recording the transfer and renaming the book into staging:
    monkeypatch.setattr(inbox.os, "rename", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        inbox.register_books(site.catalogue, site.settings, inbox.find_books(site.settings))
    monkeypatch.undo()
    (tmp_path / "inbox" / "obs.done").unlink()  # and the producer's marker is gone too
    (request,) = inbox_requests(
        ingest_sensor(dg.build_sensor_context(instance=instance, resources=dagster_resources(site)))
    )
    assert request.run_config["ops"]["verify_and_store"]["config"]["inbox_books"] == []
    run = defs.resolve_job_def("ingest_books").execute_in_process(
        run_config=request.run_config, instance=instance, resources=dagster_resources(site)
    )
    assert run.success and site.store.exists("obs")
    assert not (tmp_path / "inbox" / "obs").exists()


def test_the_inbox_run_ingests_one_capped_group_and_hands_the_rest_to_the_sensor(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    site = inbox_site(make_settings, database_url, tmp_path, ingest="max_books_per_run = 2")
    for i in range(5):
        (tmp_path / "inbox" / f"b{i}").write_bytes(b"x" * (i + 1))
        (tmp_path / "inbox" / f"b{i}.done").write_text("")
    # A book of that name is being uploaded: the sensor leaves it to that upload.
    pending = tmp_path / "pending-source"
    pending.write_bytes(b"upload")
    site.stage("b4", pending)
    (request,) = inbox_requests(
        ingest_sensor(dg.build_sensor_context(instance=instance, resources=dagster_resources(site)))
    )
    listed = request.run_config["ops"]["verify_and_store"]["config"]["inbox_books"]
    assert [book["name"] for book in listed] == ["b0", "b1", "b2", "b3"]
    run = defs.resolve_job_def("ingest_books").execute_in_process(
        run_config=request.run_config, instance=instance, resources=dagster_resources(site)
    )
    assert run.success
    assert instance.get_materialized_partitions(BOOK_KEY) == {"b0", "b1"}
    # b2 and b3 are staged and nobody's yet: the sensor's next tick asks for a capped run.
    result = ingest_sensor(
        dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    )
    ((_, names),) = [
        (r, r.tags[BOOKS_TAG]) for r in result.run_requests or [] if INBOX_TAG not in r.tags
    ]
    assert names == "b2 … b3 (2 books)"


def test_an_inbox_run_that_never_ends_does_not_hold_the_inbox_back_for_ever(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    """Its worker was killed with -9: Dagster still says "started", for ever."""
    site = inbox_site(make_settings, database_url, tmp_path, ingest="relaunch_after_seconds = 1")
    (tmp_path / "inbox" / "a.dat").write_bytes(b"a")
    (tmp_path / "inbox" / "a.dat.done").write_text("")

    def tick() -> list[dg.RunRequest]:
        context = dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
        return inbox_requests(ingest_sensor(context))

    (first,) = tick()
    add_inbox_run(instance, first, dg.DagsterRunStatus.STARTED)
    assert tick() == []
    time.sleep(1.2)
    (again,) = tick()
    assert again.tags[INBOX_TAG] == first.tags[INBOX_TAG]
