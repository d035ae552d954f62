"""The fill in Dagster: ``sneaker_fill_sensor`` asks, ``fill_sneaker_drive`` fills, the full
alert goes to Slack through dagster-slack's client (replaced here), and ``drive_copies_sensor``
shows on each book's partition which drives hold it. SQLite and PostgreSQL catalogues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import FILL_JOB, FILL_OP, STORE_TAG
from librarian_dagster.resources import NotifierResource
from librarian_dagster.sensors.sneaker import drive_copies_sensor, sneaker_fill_sensor
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState
from tests.ingest_helpers import dagster_resources
from tests.sneaker_helpers import DriveSite, drive_site
from tests.test_resources import TOKEN, FakeSlack

KB = 1000
NOTIFY = '[notify]\nslack_token_env = "TEST_SLACK_TOKEN"\nslack_channel = "#drives"\n'


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> DriveSite:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    return drive_site(make_settings, database_url, tmp_path, extra_toml=NOTIFY, capacity=2_500)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), set_dagster_home=False) as found:
        yield found


def resources(site: DriveSite, slack: FakeSlack) -> dict[str, Any]:
    class Notifier(NotifierResource):
        def slack_client(self, token: str) -> Any:
            assert token == TOKEN
            return slack

    return {
        **dagster_resources(site.site),
        "notifier": Notifier(config_file=str(site.settings.config_file)),
    }


def launch(
    site: DriveSite, instance: dg.DagsterInstance, slack: FakeSlack, store: str = "drive1"
) -> dg.ExecuteInProcessResult:
    """What ``dagster job launch -j fill_sneaker_drive`` with this store's config runs."""
    job = build_definitions().resolve_job_def(FILL_JOB)
    return job.execute_in_process(
        run_config={"ops": {FILL_OP: {"config": {"store": store}}}},
        instance=instance,
        resources=resources(site, slack),
        raise_on_error=False,
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def test_a_fill_run_fills_then_alerts_slack_once_full_with_its_numbers(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    for i in range(3):
        site.add_book(f"2026/12/07/b{i}", KB)
    slack = FakeSlack()
    result = launch(site, instance, slack)
    assert result.success
    metadata = output_metadata(result)
    assert (metadata["books"], metadata["bytes"], metadata["full"]) == (2, 2 * KB, True)
    assert metadata["free bytes"] == 500 and metadata["did not fit"] == "2026/12/07/b2"
    assert metadata["seconds"] > 0 and metadata["MB/s"] >= 0
    (posted,) = slack.posted
    assert posted["channel"] == "#drives"
    assert "Drive drive1 is full" in posted["text"]
    assert "2 books" in posted["text"] and "2000 bytes" in posted["text"]
    assert site.store_row().state == DriveState.FULL


def test_a_run_that_refused_a_book_is_red_after_recording_the_others(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    site.add_book("good", KB)
    site.add_book("bad", KB)
    path = site.site.store.path_for("bad")
    path.chmod(0o644)
    path.write_bytes(b"y" * KB)
    result = launch(site, instance, FakeSlack())
    assert not result.success
    assert "1 books refused" in str(result.failure_data_for_node(FILL_OP).user_failure_data)
    assert site.on_drive() == ["good"]


def test_a_store_that_cannot_be_filled_fails_the_run_with_the_reason(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    result = launch(site, instance, FakeSlack(), store="main")
    assert not result.success
    failure = result.failure_data_for_node(FILL_OP).user_failure_data
    assert failure is not None and "'main' is a local store, not a sneaker drive" in str(
        failure.description
    )


def test_the_sensor_asks_for_one_fill_while_none_is_under_way(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    def evaluate() -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, resources=resources(site, FakeSlack()))
        return sneaker_fill_sensor(context)

    assert evaluate().skip_reason is not None
    site.add_book("one", KB)
    (request,) = evaluate().run_requests
    assert request.run_config == {"ops": {FILL_OP: {"config": {"store": "drive1"}}}}
    assert request.tags[STORE_TAG] == "drive1"
    queued = instance.create_run_for_job(  # not started yet: as good as queued
        build_definitions().resolve_job_def(FILL_JOB), run_config=request.run_config
    )
    skipped = evaluate()
    assert not skipped.run_requests and queued.run_id in str(skipped.skip_reason)
    instance.report_run_canceled(queued)
    assert evaluate().run_requests  # the same drive, mark and newest book: the same key
    assert launch(site, instance, FakeSlack()).success
    assert str(evaluate().skip_reason.skip_message) == "no filling drive lacks a newer book"


def test_the_ui_is_shown_which_drives_hold_each_book(
    site: DriveSite, instance: dg.DagsterInstance
) -> None:
    site.add_book("one", KB)
    site.add_book("two", KB)
    assert launch(site, instance, FakeSlack()).success
    context = dg.build_sensor_context(instance=instance, resources=resources(site, FakeSlack()))
    result = drive_copies_sensor(context)
    shown = {e.partition: e.metadata["copies"].value for e in result.asset_events}
    assert shown == {"one": "here: main; here: drive1", "two": "here: main; here: drive1"}
    again = dg.build_sensor_context(
        instance=instance, resources=resources(site, FakeSlack()), cursor=result.cursor
    )
    assert drive_copies_sensor(again).skip_reason.skip_message == "no new copy on a drive"
