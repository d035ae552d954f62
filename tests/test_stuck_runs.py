"""A fill or drive ingest that stops moving: ``stuck_runs_sensor`` cancels it with an alert,
the sensors that ask for such runs ask again a bounded number of times, then stop and say
why until an operator resolves the event; a run that finishes clears the count. SQLite and
PostgreSQL catalogues, a real Dagster instance, Slack through a replaced client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import Event
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import (
    DRIVE_INGEST_JOB,
    DRIVE_INGEST_OP,
    DRIVE_TAG,
    FILL_JOB,
    FILL_OP,
    STORE_TAG,
)
from librarian_dagster.sensors.integrity_stuck import stuck_runs_sensor
from librarian_dagster.sensors.sneaker import sneaker_fill_sensor
from librarian_dagster.services.events import resolve_events
from librarian_dagster.services.integrity_stuck import STUCK_KIND
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity
from tests.ingest_helpers import dagster_resources
from tests.sneaker_helpers import DriveSite, drive_site
from tests.test_resources import TOKEN, FakeSlack, notifier_with

KB = 1000
# A run is stuck after 2 s without an event; two stalls and the cause is out of tries.
STUCK_SECONDS = 2.0
TOML = (
    '[notify]\nslack_token_env = "TEST_SLACK_TOKEN"\nslack_channel = "#ops"\n'
    "[transfer]\ncatalogue_lag_seconds = 0\n"
    f"stuck_after_hours = {STUCK_SECONDS / 3600}\nmax_attempts = 2\n"
)


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> DriveSite:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    return drive_site(make_settings, database_url, tmp_path, extra_toml=TOML)


def resources(site: DriveSite, slack: FakeSlack) -> dict[str, Any]:
    return {**dagster_resources(site.site), "notifier": notifier_with(site.settings, slack)}


def started_run(instance: dg.DagsterInstance, job_name: str, tags: dict[str, str]) -> dg.DagsterRun:
    job = build_definitions().resolve_job_def(job_name)
    op, config = (
        (FILL_OP, {"store": tags.get(STORE_TAG, "")})
        if job_name == FILL_JOB
        else (DRIVE_INGEST_OP, {"drive_uuid": tags.get(DRIVE_TAG, ""), "drive": "/mnt/x"})
    )
    return instance.create_run_for_job(
        job,
        status=dg.DagsterRunStatus.STARTED,
        tags=tags,
        run_config={"ops": {op: {"config": config}}},
    )


def watch(site: DriveSite, instance: dg.DagsterInstance, slack: FakeSlack) -> str:
    context = dg.build_sensor_context(instance=instance, resources=resources(site, slack))
    result = stuck_runs_sensor(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def ask_fill(site: DriveSite, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources=resources(site, FakeSlack()))
    return sneaker_fill_sensor(context)


def stuck_events(site: DriveSite) -> list[Event]:
    with site.site.catalogue.session() as session:
        rows = session.scalars(select(Event).where(Event.kind == STUCK_KIND)).all()
        session.expunge_all()
        return list(rows)


def status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found.status


def test_a_fill_that_stops_moving_is_cancelled_asked_again_then_given_up(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    site.add_book("one", KB)
    slack = FakeSlack()
    (first,) = ask_fill(site, instance).run_requests
    assert "stuck" not in str(first.run_key)

    hung = started_run(instance, FILL_JOB, {STORE_TAG: "drive1"})
    moving = started_run(instance, DRIVE_INGEST_JOB, {DRIVE_TAG: "some-drive"})
    time.sleep(STUCK_SECONDS + 0.2)
    instance.report_engine_event("copied a book", moving)  # progress: left alone
    assert "cancelled 1 stuck runs" in watch(site, instance, slack)
    assert status(instance, moving) == dg.DagsterRunStatus.STARTED
    (event,) = stuck_events(site)
    assert (event.subject, event.count, event.severity) == (
        "fill_sneaker_drive:drive1",
        1,
        Severity.WARNING,
    )
    assert hung.run_id in event.message and "Stall 1 of 2" in event.message
    (posted,) = slack.posted
    assert "Run of fill_sneaker_drive for drive1 stuck" in posted["text"]

    # Until the hung process is gone (run monitoring marks it cancelled), no second writer.
    # (The test instance's launcher has no process to end: the run stays canceling.)
    assert status(instance, hung) == dg.DagsterRunStatus.CANCELING
    waiting = ask_fill(site, instance)
    assert not waiting.run_requests and hung.run_id in str(waiting.skip_reason)
    instance.report_run_canceled(instance.get_run_by_id(hung.run_id))
    (again,) = ask_fill(site, instance).run_requests  # the same mark and book: a new key
    assert again.run_key.startswith(f"{first.run_key}:stuck")
    instance.report_engine_event("another book", moving)
    assert watch(site, instance, slack) == "no fill or drive ingest is stuck"

    second = started_run(instance, FILL_JOB, {STORE_TAG: "drive1"})
    time.sleep(STUCK_SECONDS + 0.2)
    instance.report_engine_event("a last word", moving)
    watch(site, instance, slack)
    assert status(instance, second) != dg.DagsterRunStatus.STARTED
    instance.report_run_canceled(instance.get_run_by_id(second.run_id))
    (event,) = stuck_events(site)
    assert (event.count, event.severity) == (2, Severity.ERROR)
    assert len(slack.posted) == 2  # out of tries is worse: told at once, not grouped away
    assert "not asked again until" in slack.posted[1]["text"]
    skipped = ask_fill(site, instance)
    assert not skipped.run_requests
    assert "2 runs stalled and were cancelled" in str(skipped.skip_reason)
    assert event.created_at < event.last_at  # the first stall's time is kept

    with site.site.catalogue.session() as session:
        resolve_events(session, [event.id], "operator", "drive re-seated")
    (retried,) = ask_fill(site, instance).run_requests
    # Dagster never asks twice for one key: every stall and every resolution makes a new one.
    assert retried.run_key not in (first.run_key, again.run_key)


def test_a_fill_that_runs_to_its_end_clears_the_stalls(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    site.add_book("one", KB)
    started_run(instance, FILL_JOB, {STORE_TAG: "drive1"})
    time.sleep(STUCK_SECONDS + 0.2)
    watch(site, instance, FakeSlack())
    assert [e.resolved for e in stuck_events(site)] == [False]
    job = build_definitions().resolve_job_def(FILL_JOB)
    result = job.execute_in_process(
        run_config={"ops": {FILL_OP: {"config": {"store": "drive1"}}}},
        instance=instance,
        resources=resources(site, FakeSlack()),
    )
    assert result.success
    (event,) = stuck_events(site)
    assert event.resolved and event.resolved_by == "finished run"


def test_a_launcher_that_fails_to_end_the_run_loses_no_stall(
    site: DriveSite, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(run_id: str) -> bool:
        raise RuntimeError("code server gone")

    monkeypatch.setattr(instance.run_launcher, "terminate", refuses)
    hung = started_run(instance, FILL_JOB, {STORE_TAG: "drive1"})
    time.sleep(STUCK_SECONDS + 0.2)
    assert "cancelled 1 stuck runs" in watch(site, instance, FakeSlack())
    (event,) = stuck_events(site)
    assert event.count == 1 and hung.run_id in event.message
    assert status(instance, hung) == dg.DagsterRunStatus.CANCELING  # monitoring ends it
    assert watch(site, instance, FakeSlack()) == "no fill or drive ingest is stuck"
