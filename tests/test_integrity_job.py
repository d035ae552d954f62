"""The scheduled integrity pass: due copies oldest first within a budget, the burst guard,
a failing store left alone, alerts grouped by cause, and the ``verify_integrity`` job.

Books are written straight into the store and catalogued (real bytes, real checksums), so
that a hundred of them cost milliseconds; the pass reads them as it reads any book.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select, update

from librarian_dagster.catalogue.models import CorruptFile, Event, File, Instance, Store
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import VERIFY_JOB, VERIFY_SCHEDULE
from librarian_dagster.resources import NotifierResource
from librarian_dagster.services.integrity import Budget, verify_instances
from librarian_dagster.services.integrity_guard import GUARD_KIND, GuardPolicy, guarded_stores
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity
from librarian_dagster.storage.checksums import hash_path
from tests.ingest_helpers import Site, dagster_resources, open_site
from tests.test_resources import FakeSlack

defs = build_definitions()
TOKEN = "xoxb-not-a-real-token-0123456789"
POLICY = GuardPolicy(max_bad_fraction=0.01, min_bad=2)


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    return open_site(
        make_settings(
            database_url=database_url,
            extra_toml='[notify]\nslack_token_env = "TEST_SLACK_TOKEN"\nslack_channel = "#ops"',
        )
    )


def shelve(site: Site, count: int, size: int = 1000, prefix: str = "b") -> list[str]:
    """``count`` one-file books in the main store, catalogued; verified days ago, in order."""
    names = [f"{prefix}/{index:04d}" for index in range(count)]
    long_ago = datetime.now(UTC) - timedelta(days=60)
    with site.catalogue.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == "main"))
        for index, name in enumerate(names):
            path = site.store.path_for(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([index % 251]) * size)
            file = File(
                name=name,
                size=size,
                checksum=str(hash_path(path, "xxh3_128")),
                is_directory=False,
                uploader="test",
                source=site.settings.name,
            )
            session.add(file)
            session.flush()
            session.add(
                Instance(
                    file_id=file.id,
                    store_id=store_id,
                    path=str(path),
                    verified_at=long_ago + timedelta(minutes=index),
                )
            )
    return names


def rot(site: Site, name: str) -> None:
    path = site.store.path_for(name)
    path.chmod(0o644)
    path.write_bytes(b"bit rot")


def verified_since(site: Site, moment: datetime) -> list[str]:
    with site.catalogue.session() as session:
        return sorted(
            session.scalars(select(File.name).join(Instance).where(Instance.verified_at >= moment))
        )


def open_events(site: Site, kind: str) -> list[Event]:
    with site.catalogue.session() as session:
        return list(
            session.scalars(select(Event).where(Event.kind == kind, Event.resolved.is_(False)))
        )


def test_a_scheduled_pass_reads_due_copies_oldest_first_within_its_byte_budget(
    site: Site,
) -> None:
    names = shelve(site, 12)
    fresh = datetime.now(UTC) - timedelta(days=1)
    with site.catalogue.session() as session:  # the last two were verified yesterday
        session.execute(
            update(Instance)
            .where(Instance.file_id.in_(select(File.id).where(File.name.in_(names[-2:]))))
            .values(verified_at=fresh)
        )
    started = datetime.now(UTC)
    budget = Budget.scheduled(site.settings)
    small = Budget(**{**budget.__dict__, "max_bytes": 4500})  # four 1000-byte books fit
    report = verify_instances(site.catalogue, site.stores, budget=small, settings=site.settings)
    assert report.good == names[:4] and report.stopped.startswith("byte budget")
    assert verified_since(site, started) == names[:4]
    assert report.overdue == 6  # 12 - 4 read - 2 fresh

    rest = verify_instances(site.catalogue, site.stores, budget=budget, settings=site.settings)
    assert rest.good == names[4:10] and rest.stopped == "" and rest.overdue == 0
    again = verify_instances(site.catalogue, site.stores, budget=budget, settings=site.settings)
    assert again.good == [] and again.passed  # nothing due: nothing read


def test_one_book_larger_than_the_byte_budget_is_still_read(site: Site) -> None:
    (name,) = shelve(site, 1, size=10_000)
    budget = Budget(max_books=10, max_bytes=100)
    report = verify_instances(site.catalogue, site.stores, budget=budget)
    assert report.good == [name]


def test_burst_guard_five_of_a_hundred_bad_guards_the_store_and_says_so_once(
    site: Site,
) -> None:
    names = shelve(site, 100)
    for name in names[10:15]:
        rot(site, name)
    budget = Budget(max_books=1000)
    report = verify_instances(
        site.catalogue, site.stores, budget=budget, settings=site.settings, policy=POLICY
    )
    assert len(report.good) == 95 and len(report.bad) == 5
    assert list(report.guarded) == ["main"] and report.new_guards == ["main"]
    assert "5 of 100 copies" in report.guarded["main"]
    (guard,) = open_events(site, GUARD_KIND)
    assert guard.subject == "main" and "main" in guard.message
    with site.catalogue.session() as session:
        assert guarded_stores(session) == {"main"}
        assert guarded_stores(session, ["other"]) == set()
        # Recorded, out of service, nothing deleted.
        assert len(session.scalars(select(CorruptFile)).all()) == 5
    assert all(site.store.path_for(name).exists() for name in names)

    # The next pass finds no new bad copy: no new guard event, the guard stays up.
    later = verify_instances(
        site.catalogue, site.stores, budget=budget, settings=site.settings, policy=POLICY
    )
    assert later.new_guards == [] and later.guarded == {}
    assert [event.id for event in open_events(site, GUARD_KIND)] == [guard.id]
    with site.catalogue.session() as session:
        assert guarded_stores(session) == {"main"}


def test_one_bad_copy_in_a_hundred_is_not_a_burst(site: Site) -> None:
    names = shelve(site, 100)
    rot(site, names[50])
    report = verify_instances(
        site.catalogue, site.stores, budget=Budget(max_books=1000), policy=POLICY
    )
    assert len(report.bad) == 1 and report.guarded == {}
    assert open_events(site, GUARD_KIND) == []


def test_a_store_failing_read_after_read_is_left_alone_not_marked_missing(site: Site) -> None:
    names = shelve(site, 40)
    for name in names[:25]:  # the disk "went away" under the oldest 25
        site.store.path_for(name).unlink()
    report = verify_instances(
        site.catalogue, site.stores, budget=Budget(max_books=1000), policy=POLICY
    )
    assert len(report.bad) == 10, "the pass went on marking copies missing"
    assert "10 copies in a row could not be read" in report.unreadable_stores["main"]
    assert "main" in report.guarded
    with site.catalogue.session() as session:
        in_service = session.scalars(select(Instance).where(Instance.available)).all()
        assert len(in_service) == 30


def job_with_slack(site: Site, slack: FakeSlack) -> dg.JobDefinition:
    class Notifier(NotifierResource):
        def slack_client(self, token: str) -> Any:
            return slack

    resources = dagster_resources(site)
    resources["notifier"] = Notifier(config_file=str(site.settings.config_file))
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        resources=resources,
    ).resolve_job_def(VERIFY_JOB)


def test_the_verify_integrity_job_fails_alerts_once_and_goes_green_after_repair(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    names = shelve(site, 20)
    slack = FakeSlack()
    job = job_with_slack(site, slack)
    first = job.execute_in_process(instance=instance)
    (evaluation,) = first.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["verified"].value == 20
    assert slack.posted == []

    backup = tmp_path / "backup"
    shutil.copy(site.store.path_for(names[3]), backup)
    rot(site, names[3])
    with site.catalogue.session() as session:  # make it due again
        session.execute(update(Instance).values(verified_at=datetime.now(UTC) - timedelta(days=40)))
    for _ in range(2):
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed
    (message,) = slack.posted  # the same cause twice: one message
    assert names[3] in message["text"] and message["channel"] == "#ops"
    assert open_events(site, GUARD_KIND) == []  # one bad copy in 20: not a burst

    path = site.store.path_for(names[3])
    path.chmod(0o644)
    shutil.copy(backup, path)
    result = job.execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["repaired"].value == [names[3]]


def test_the_schedule_asks_for_a_pass_unless_one_is_unfinished(
    site: Site, instance: dg.DagsterInstance
) -> None:
    schedule = defs.get_schedule_def(VERIFY_SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(instance=instance) as context:
        assert isinstance(schedule.evaluate_tick(context).run_requests, list)
        (request,) = schedule.evaluate_tick(context).run_requests or []
        assert request.job_name in (None, VERIFY_JOB)
    job = defs.resolve_job_def(VERIFY_JOB)
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    with dg.build_schedule_context(instance=instance) as context:
        result = schedule.evaluate_tick(context)
        assert not result.run_requests and "has not finished" in (result.skip_message or "")


def test_a_pass_that_falls_behind_warns_instead_of_showing_green(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    instance: dg.DagsterInstance,
) -> None:
    site = open_site(
        make_settings(database_url=database_url, extra_toml="[integrity]\nmax_books_per_run = 15\n")
    )
    shelve(site, 20)  # all verified 60 days ago: all overdue
    job = job_with_slack(site, FakeSlack())
    config = {"ops": {"book_checksums_match": {"config": {"scheduled": True}}}}
    behind = job.execute_in_process(instance=instance, run_config=config)
    assert behind.success  # nothing is damaged: a warning, not a failed run
    (evaluation,) = behind.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "5 copies were not re-verified" in (evaluation.description or "")
    (event,) = open_events(site, "integrity_behind")
    assert event.severity == Severity.WARNING

    caught_up = job.execute_in_process(instance=instance, run_config=config)
    (evaluation,) = caught_up.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["verified"].value == 5
    assert open_events(site, "integrity_behind") == []
