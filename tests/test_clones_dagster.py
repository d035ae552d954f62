"""The Dagster side of cloning: sensors ask, runs do, the UI sees (assets, observations).

Two in-process librarians (``clone_helpers``); each side's sensors are evaluated with
``build_sensor_context`` on its own instance and the requested runs executed in process with
the code location's resources, the ``peers`` one reaching the other site in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.assets.clones import peer_asset, peer_asset_key
from librarian_dagster.catalogue.models import OutgoingTransfer, TransferBatch
from librarian_dagster.definitions import build_definitions
from librarian_dagster.resources import librarian_resources
from librarian_dagster.resources.peers import PeersResource
from librarian_dagster.sensors.clones import clone_sensor, clone_transfers_sensor
from librarian_dagster.sensors.clones_copies import peer_copies_sensor
from librarian_dagster.sensors.clones_receive import callbacks_sensor, receive_clones_sensor
from librarian_dagster.services.peers import PeerLinks
from librarian_dagster.states import BatchStatus, TransferStatus
from tests.clone_helpers import CloneSite, befriend_both, clone_sites, links_for, wait_for_tasks
from tests.test_clones import count, sent_items, upload

SITES: dict[str, CloneSite] = {}
DOWN: set[str] = set()


class InProcessPeers(PeersResource):
    """The ``peers`` resource, reaching the other test librarians in process (but those in
    ``DOWN``, which do not answer)."""

    def links(self) -> PeerLinks:
        return links_for(SITES, frozenset(DOWN))


def resources(site: CloneSite) -> dict[str, object]:
    found = dict(librarian_resources(str(site.settings.config_file)))
    found["peers"] = InProcessPeers(config_file=str(site.settings.config_file))
    return found


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        befriend_both(sites["site-a"], sites["site-b"])
        SITES.clear()
        SITES.update(sites)
        DOWN.clear()
        yield sites
        SITES.clear()
        DOWN.clear()


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[dict[str, dg.DagsterInstance]]:
    for name in ("dagster-a", "dagster-b"):
        (tmp_path / name).mkdir()
    with (
        dg.instance_for_test(temp_dir=str(tmp_path / "dagster-a"), set_dagster_home=False) as a,
        dg.instance_for_test(temp_dir=str(tmp_path / "dagster-b"), set_dagster_home=False) as b,
    ):
        yield {"site-a": a, "site-b": b}


def evaluate(  # type: ignore[no-untyped-def]
    sensor: dg.SensorDefinition,
    site: CloneSite,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
):
    context = dg.build_sensor_context(instance=instance, resources=resources(site), cursor=cursor)
    return sensor(context)


def execute(
    request: dg.RunRequest, site: CloneSite, instance: dg.DagsterInstance, job_name: str
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(["site-b" if site.name == "site-a" else "site-a"])
    job = defs.resolve_job_def(request.job_name or job_name)
    return job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources=resources(site),
        tags=request.tags,
        raise_on_error=False,
    )


def test_sensors_and_runs_carry_books_to_the_peer_and_the_ui_shows_it(
    pair: dict[str, CloneSite],
    instances: dict[str, dg.DagsterInstance],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    ia, ib = instances["site-a"], instances["site-b"]
    names = upload(a, tmp_path, 3)
    ia.add_dynamic_partitions("books", names)
    first = evaluate(clone_sensor, a, ia)
    (request,) = first.run_requests
    assert (
        request.tags["librarian/peer"] == "site-b"
        and "(3 books)" in request.tags["librarian/books"]
    )
    assert evaluate(clone_sensor, a, ia).run_requests == []  # leased: not asked twice
    sent = execute(request, a, ia, "clone_batch")
    assert sent.success
    output = next(e for e in sent.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = output.event_specific_data.metadata
    assert metadata["peer"].value == "site-b" and metadata["books"].value == 3
    assert metadata["mover task id"].value and metadata["step"].value == "submitted"
    (observed,) = ia.fetch_observations(peer_asset_key("site-b"), limit=10).records
    metadata = observed.asset_observation.metadata  # one for the batch, not one per book
    assert metadata["state"].value.startswith("in flight: batch")
    assert sorted(metadata["in flight"].value) == sorted(names)
    wait_for_tasks(a)
    (settle,) = evaluate(clone_transfers_sensor, a, ia).run_requests
    settled = execute(settle, a, ia, "clone_batch")
    assert settled.success
    # b was told "staged" by that run: its receive sensor asks for a run, which stores them.
    (receive,) = evaluate(receive_clones_sensor, b, ib).run_requests
    assert set(ib.get_dynamic_partitions("books")) == set(names)
    received = execute(receive, b, ib, "receive_clones")
    assert received.success
    assert {
        m.partition for m in received.asset_materializations_for_node("receive_and_store")
    } == set(names)
    # ... and told a at once: a records b's copies; a's UI shows them on peers/site-b.
    assert count(a, OutgoingTransfer, OutgoingTransfer.status == TransferStatus.STORED) == 3
    copies = evaluate(peer_copies_sensor, a, ia)
    materialized = {
        e.partition for e in copies.asset_events if e.asset_key == peer_asset_key("site-b")
    }
    assert materialized == set(names)
    observed = [e for e in copies.asset_events if e.asset_key == BOOK_KEY]
    assert {e.metadata["copies"].value for e in observed} == {"here: main; site-b: main"}
    assert copies.cursor
    assert evaluate(peer_copies_sensor, a, ia, copies.cursor).asset_events == []
    assert evaluate(callbacks_sensor, a, ia).run_requests == []  # nothing owed


def test_a_failed_run_of_a_batch_is_red_and_the_batch_is_asked_for_again(
    pair: dict[str, CloneSite], instances: dict[str, dg.DagsterInstance], tmp_path: Path
) -> None:
    a = pair["site-a"]
    ia = instances["site-a"]
    upload(a, tmp_path, 1)
    (request,) = evaluate(clone_sensor, a, ia).run_requests
    DOWN.add("site-b")
    failed = execute(request, a, ia, "clone_batch")
    DOWN.clear()
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "connection refused" in str(failure.event_specific_data.error_display_string)
    with a.catalogue.session() as session:
        batch = session.scalars(select(TransferBatch)).one()
        assert batch.status == BatchStatus.INITIATED and batch.attempts == 1
        batch.next_attempt_at = None  # its back-off is over
    (again,) = evaluate(clone_sensor, a, ia).run_requests
    assert again.tags["librarian/batch"] == request.tags["librarian/batch"]
    assert execute(again, a, ia, "clone_batch").success
    assert len(sent_items(a)) == 1


def test_a_backfill_of_a_peers_missing_partitions_sends_them_again(
    pair: dict[str, CloneSite], instances: dict[str, dg.DagsterInstance], tmp_path: Path
) -> None:
    a = pair["site-a"]
    ia = instances["site-a"]
    names = upload(a, tmp_path, 2)
    ia.add_dynamic_partitions("books", names)
    result = dg.materialize(
        [peer_asset("site-b")],
        instance=ia,
        resources=resources(a),
        tags={
            "dagster/asset_partition_range_start": names[0],
            "dagster/asset_partition_range_end": names[-1],
        },
    )
    assert result.success
    assert result.get_asset_materialization_events() == []  # not there until b says so
    with a.catalogue.session() as session:
        rows = session.scalars(select(OutgoingTransfer)).all()
        assert sorted(row.file.name for row in rows) == names
        assert {row.status for row in rows} == {TransferStatus.INITIATED}
        assert all(row.batch_id is None for row in rows)
    (request,) = evaluate(clone_sensor, a, ia).run_requests
    assert "(2 books)" in request.tags["librarian/books"]
