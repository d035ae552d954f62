"""Ingest runs executed in the API process: the launcher, and runs whose process died."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select, update

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.dagster_instance import prepare_dagster_home
from librarian_dagster.jobs import api_executor
from librarian_dagster.jobs.ingest_launchers import InProcessRunLauncher
from librarian_dagster.jobs.names import (
    API_EXECUTOR,
    BOOKS_PARTITIONS,
    EXECUTOR_TAG,
    FINISHED_TAG,
    PROCESS_TAG,
)
from librarian_dagster.jobs.run_liveness import (
    fail_abandoned_runs,
    process_is_gone,
    process_token,
    run_is_active,
    token_of,
)
from librarian_dagster.sensors.ingest import ingest_sensor
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.settings import LibrarianSettings
from tests.ingest_helpers import Site, dagster_resources, make_book, open_site


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def dead_token() -> str:
    """The token of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        token = token_of(child.pid)
    finally:
        child.kill()
        child.wait()
    return token


def add_run(instance: dg.DagsterInstance, token: str, **more_tags: str) -> str:
    """A started API run executed by the process with ``token`` (plus any other tags)."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="ingest_books",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={EXECUTOR_TAG: API_EXECUTOR, PROCESS_TAG: token, **more_tags},
        )
    )
    return run_id


def test_process_tokens_tell_live_processes_from_exited_ones() -> None:
    assert not process_is_gone(process_token())
    assert process_is_gone(dead_token())
    host, pid, start = process_token().split(":")
    assert host == socket.gethostname() and int(pid) > 0 and start.isdigit()
    # The same pid with another start time is another process: the one we knew is gone.
    assert process_is_gone(f"{host}:{pid}:{int(start) + 1}")
    # Processes on other hosts cannot be checked from here: assumed alive.
    assert not process_is_gone(f"another-host-{uuid.uuid4().hex}:1:1")


def test_runs_of_exited_api_processes_are_over_and_marked_failed(
    instance: dg.DagsterInstance,
) -> None:
    alive = add_run(instance, process_token())
    dead = add_run(instance, dead_token())
    assert run_is_active(instance, alive)
    assert not run_is_active(instance, dead)
    assert fail_abandoned_runs(instance) == [dead]
    statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in (alive, dead)}  # type: ignore[union-attr]
    assert statuses == {alive: dg.DagsterRunStatus.STARTED, dead: dg.DagsterRunStatus.FAILURE}
    assert fail_abandoned_runs(instance) == []


def test_an_api_run_is_active_until_finished_or_its_process_exits(
    instance: dg.DagsterInstance,
) -> None:
    """Terminate in the UI (or run monitoring) can mark a run canceled while the API's
    thread still renames its books: the status must not hand them to another run."""
    run_id = add_run(instance, process_token())
    run = instance.get_run_by_id(run_id)
    assert run is not None
    instance.report_run_canceled(run, "terminated from the UI")
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]
    assert run_is_active(instance, run_id)
    instance.add_run_tags(run_id, {FINISHED_TAG: "true"})
    assert not run_is_active(instance, run_id)


def test_a_re_execution_of_an_api_run_is_judged_as_a_queued_run(
    instance: dg.DagsterInstance,
) -> None:
    """A re-execution from the UI inherits the API run's tags (executor, process, finished)
    but runs in a worker: only its status says whether it is active, and it is never failed
    as abandoned because the API process that ran its parent exited."""
    tags = {FINISHED_TAG: "true", "dagster/parent_run_id": str(uuid.uuid4())}
    run_id = add_run(instance, dead_token(), **tags)
    assert run_is_active(instance, run_id)
    assert fail_abandoned_runs(instance) == []
    instance.report_run_failed(instance.get_run_by_id(run_id), "done")  # type: ignore[arg-type]
    assert not run_is_active(instance, run_id)


def test_sensor_takes_over_books_of_a_dead_api_run(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"abandoned")
    upload_id = site.upload("abandoned/book", source)
    dead = add_run(instance, dead_token())
    with site.catalogue.session() as session:
        session.execute(
            update(IncomingTransfer)
            .where(IncomingTransfer.id == upload_id)
            .values(status="verifying", run_id=dead)
        )
    result = ingest_sensor(
        dg.build_sensor_context(instance=instance, resources=dagster_resources(site))
    )
    assert isinstance(result, dg.SensorResult)
    requested = [
        transfer_id
        for request in result.run_requests or []
        for transfer_id in request.run_config["ops"]["verify_and_store"]["config"]["transfer_ids"]
    ]
    assert requested == [upload_id]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def staged_items(site: Site, *upload_ids: int) -> list[StagedItem]:
    with site.catalogue.session() as session:
        rows = session.execute(
            select(IncomingTransfer.id, IncomingTransfer.name, IncomingTransfer.size)
            .where(IncomingTransfer.id.in_(upload_ids))
            .order_by(IncomingTransfer.id)
        ).all()
    return [StagedItem(row.id, row.name, row.size, committed_by="alice") for row in rows]


def test_in_process_launcher_stores_books_in_a_tagged_api_run(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    good = site.upload("api/good", make_book(tmp_path, "good"))
    bad_source = tmp_path / "bad.dat"
    bad_source.write_bytes(b"payload")
    bad = site.stage("api/bad", bad_source)
    site.copy_in(bad, bad_source)
    site.commit(bad, "xxh3_128:" + "1" * 32)

    launcher = InProcessRunLauncher(site.catalogue, site.settings, instance=instance)
    launcher.request(staged_items(site, good, bad))
    wait_for(lambda: site.status(good)[0] == "stored" and site.status(bad)[0] == "failed")
    wait_for(lambda: FINISHED_TAG in instance.get_runs()[0].tags)  # after execute_in_process

    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE  # it refused a book (and stored the other)
    assert run.job_name == "ingest_books"
    assert run.tags[EXECUTOR_TAG] == API_EXECUTOR
    assert run.tags[PROCESS_TAG] == process_token()
    assert run.tags[FINISHED_TAG] == "true"
    # Where it came from: the UI's "Launched by" reads the user tag, not "Manually launched".
    assert run.tags["user"] == "alice (commit)"
    assert run.tags["librarian/requested_by"] == "upload commit"
    # Re-executable from the UI: it names the code location and repository it belongs to.
    origin = run.remote_job_origin
    assert origin is not None and origin.job_name == "ingest_books"
    assert origin.repository_origin.code_location_origin.location_name == "librarian"
    assert origin.repository_origin.repository_name == "__repository__"
    assert instance.get_dynamic_partitions(BOOKS_PARTITIONS) == ["api/good"]
    assert instance.get_materialized_partitions(BOOK_KEY) == {"api/good"}
    assert "checksum mismatch" in (site.status(bad)[1] or "")


def test_launcher_hands_a_batch_back_to_the_sensor_when_it_cannot_run_it(
    site: Site, instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    upload_id = site.upload("api/handed-back", source)
    with site.catalogue.session() as session:  # as the API's commit does
        session.execute(
            update(IncomingTransfer)
            .where(IncomingTransfer.id == upload_id)
            .values(launched_at=datetime.now(UTC))
        )

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the instance is unreachable")

    monkeypatch.setattr(api_executor, "execute_ingest_run", broken)
    launcher = InProcessRunLauncher(site.catalogue, site.settings, instance=instance)
    launcher.request(staged_items(site, upload_id))

    def handed_back() -> bool:
        with site.catalogue.session() as session:
            transfer = session.get(IncomingTransfer, upload_id)
            return transfer is not None and transfer.launched_at is None

    wait_for(handed_back)
    assert site.status(upload_id)[0] == "staged"


def test_the_api_instance_needs_its_own_config_file(
    make_settings: Callable[..., LibrarianSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without api-instance.yaml Dagster would open a default instance: refuse instead."""
    settings = make_settings()
    home = settings.dagster_home
    home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with pytest.raises(RuntimeError, match=r"api-instance\.yaml is missing"):
        api_executor.api_instance()
    prepare_dagster_home(settings)
    with api_executor.api_instance() as instance:
        assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
        assert instance.root_directory == str(home)
