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
    sites: dict[str, CloneSite],
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from librarian_dagster.jobs import sneaker as sneaker_jobs

    monkeypatch.setattr(sneaker_jobs, "BYTES_PROGRESS_EVERY", -1.0)  # every chunk: heard
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
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("bytes copied off the drive so far" in line for line in logs)
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


def test_a_drive_whose_ingests_kept_stalling_waits_for_an_operator(
    sites: dict[str, CloneSite], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    from sqlalchemy import select

    from librarian_dagster.catalogue.models import Event
    from librarian_dagster.jobs.names import DRIVE_INGEST_JOB
    from librarian_dagster.services.events import raise_event, resolve_events
    from librarian_dagster.services.integrity_stuck import STUCK_KIND, stuck_subject
    from librarian_dagster.states import Severity

    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    uuid = ask(b, drive_of(sites))
    subject = stuck_subject(DRIVE_INGEST_JOB, uuid)
    with b.catalogue.session() as session:  # what stuck_runs_sensor records, stall by stall
        for _ in range(b.settings.transfer.max_attempts):
            raise_event(session, Severity.WARNING, STUCK_KIND, "stalled", subject=subject)
    held = evaluate(b, instance)
    assert not held.run_requests and "runs stalled and were cancelled" in str(held.skip_reason)

    with b.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == STUCK_KIND)).all()
        resolve_events(session, [event.id], "operator", "drive re-seated")
        raise_event(session, Severity.WARNING, STUCK_KIND, "stalled once more", subject=subject)
    (request,) = evaluate(b, instance).run_requests  # tries left again
    assert execute(b, instance, request).success
    with b.catalogue.session() as session:  # a run that finished: its stalls are over
        events = session.scalars(select(Event).where(Event.kind == STUCK_KIND)).all()
        assert [e.resolved for e in events] == [True, True]
        assert events[1].resolved_by == "finished run"
