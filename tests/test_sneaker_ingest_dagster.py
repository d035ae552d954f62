"""The destination in Dagster: ``sneaker_ingest_sensor`` asks once per drive with books
waiting, ``ingest_sneaker_drive`` stores them with a ``book`` materialization each, and a
refused book turns the run red after the others are stored. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import DRIVE_INGEST_OP, DRIVE_TAG
from librarian_dagster.resources import librarian_resources
from librarian_dagster.sensors.sneaker import sneaker_ingest_sensor
from librarian_dagster.wire.sneaker import MANIFEST_FILE
from tests.clone_helpers import CloneSite
from tests.test_sneaker_roundtrip import ADMIN, BOOKS, drive_of, filled_and_shipped, sites

__all__ = ["sites"]  # the fixture, shared


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster-b"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as found:
        yield found


def ask(b: CloneSite, drive: Path) -> str:
    response = b.client.post("/api/v2/sneaker/ingest", json={"drive": str(drive)}, auth=ADMIN)
    assert response.status_code == 202, response.text
    return str(response.json()["drive_uuid"])


def evaluate(b: CloneSite, instance: dg.DagsterInstance) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, resources=librarian_resources(str(b.settings.config_file))
    )
    return sneaker_ingest_sensor(context)


def execute(
    b: CloneSite, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def(request.job_name or "")
    return job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources=librarian_resources(str(b.settings.config_file)),
        tags=request.tags,
        raise_on_error=False,
    )


def test_the_sensor_asks_once_and_the_run_stores_the_drive(
    sites: dict[str, CloneSite], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    assert evaluate(b, instance).skip_reason is not None  # nothing asked yet
    uuid = ask(b, drive_of(sites))
    (request,) = evaluate(b, instance).run_requests
    assert request.tags[DRIVE_TAG] == uuid
    assert not evaluate(b, instance).run_requests  # asked for: not again until overdue
    result = execute(b, instance, request)
    assert result.success
    stored = {m.partition for m in result.asset_materializations_for_node(DRIVE_INGEST_OP)}
    assert stored == set(BOOKS)
    assert {m.asset_key for m in result.asset_materializations_for_node(DRIVE_INGEST_OP)} == {
        BOOK_KEY
    }
    assert not evaluate(b, instance).run_requests


def test_a_refused_book_turns_the_run_red_after_the_others_are_stored(
    sites: dict[str, CloneSite], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    book = drive_of(sites) / "store" / BOOKS[2]
    book.chmod(0o644)
    book.write_bytes(b"flipped on the way" + book.read_bytes()[18:])
    ask(b, drive_of(sites))
    (request,) = evaluate(b, instance).run_requests
    result = execute(b, instance, request)
    assert not result.success
    failure = result.failure_data_for_node(DRIVE_INGEST_OP).user_failure_data
    assert failure is not None and "1 books of drive" in str(failure.description)
    assert instance.get_materialized_partitions(BOOK_KEY) == set(BOOKS[:2])
    manifest = json.loads((drive_of(sites) / MANIFEST_FILE).read_text())
    assert len(manifest["books"]) == 3  # the drive and its manifest are left as they were
