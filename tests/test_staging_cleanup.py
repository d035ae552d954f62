"""Leftover staging: failed and cancelled transfers' directories go; unknown ones and an
inbox book's kept data are reported, never deleted."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import Event, IncomingTransfer
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import STAGING_JOB
from librarian_dagster.services.integrity_staging import STAGING_KIND, clean_staging
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferKind, TransferStatus
from librarian_dagster.storage.local_store import LocalStore
from tests.api_helpers import api_client
from tests.ingest_helpers import Site, dagster_resources, open_site


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def staged(
    site: Site, tmp_path: Path, name: str, status: TransferStatus, kind: TransferKind
) -> str:
    source = tmp_path / name
    source.write_bytes(b"x" * 100)
    upload_id = site.stage(name, source)
    site.copy_in(upload_id, source)
    with site.catalogue.session() as session:
        row = session.get(IncomingTransfer, upload_id)
        assert row is not None
        row.status, row.kind = status, kind
        return row.staging_id


def test_only_ended_transfers_that_hold_no_only_copy_are_cleaned(
    site: Site, tmp_path: Path
) -> None:
    failed = staged(site, tmp_path, "failed", TransferStatus.FAILED, TransferKind.UPLOAD)
    cancelled = staged(site, tmp_path, "cancelled", TransferStatus.CANCELLED, TransferKind.CLONE)
    inbox = staged(site, tmp_path, "inbox", TransferStatus.FAILED, TransferKind.INBOX)
    pending = staged(site, tmp_path, "pending", TransferStatus.STAGED, TransferKind.UPLOAD)
    unknown = uuid.uuid4().hex
    (site.store.staging_dir / unknown).mkdir()
    (site.store.staging_dir / unknown / "mystery").write_bytes(b"?")

    report = clean_staging(site.catalogue, site.store, min_age=-1)
    assert sorted(report.removed) == sorted([failed, cancelled])
    reported = dict(report.reported)
    assert set(reported) == {inbox, unknown}
    assert "no transfer knows it" in reported[unknown] and "inbox" in reported[inbox]
    left = {path.name for path in site.store.staging_dir.iterdir()}
    assert left == {inbox, pending, unknown}
    # Young directories are not even looked at.
    assert clean_staging(site.catalogue, site.store).reported == []


def test_the_clean_staging_job_runs_it(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian_dagster.services import integrity_staging

    monkeypatch.setattr(integrity_staging, "MIN_AGE", -1.0)
    failed = staged(site, tmp_path, "failed", TransferStatus.FAILED, TransferKind.UPLOAD)
    job = dg.Definitions(
        jobs=build_definitions().jobs, resources=dagster_resources(site)
    ).resolve_job_def(STAGING_JOB)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert not (site.store.staging_dir / failed).exists()


def test_ping_shows_what_the_last_run_reported_and_walks_nothing(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = site.store.staging_dir / uuid.uuid4().hex
    unknown.mkdir()
    (unknown / "mystery").write_bytes(b"?")

    def open_events() -> list[tuple[str | None, int, int]]:
        with site.catalogue.session() as session:
            return [
                (event.subject, event.count, (event.details or {})["leftovers"])
                for event in session.scalars(
                    select(Event).where(Event.kind == STAGING_KIND, Event.resolved.is_(False))
                )
            ]

    with api_client(site.settings) as client:

        def leftovers() -> int:
            (store,) = client.get("/api/v2/ping").json()["stores"]
            return int(store["leftover_staging"])

        monkeypatch.setattr(LocalStore, "leftover_staging", None)  # /ping must not walk
        assert leftovers() == 0  # not counted yet
        monkeypatch.undo()

        clean_staging(site.catalogue, site.store, min_age=-1)
        clean_staging(site.catalogue, site.store, min_age=-1)
        assert leftovers() == 1
        assert open_events() == [("main", 2, 1)]

        shutil.rmtree(unknown)  # an operator had a look
        clean_staging(site.catalogue, site.store, min_age=-1)
        assert leftovers() == 0
        assert open_events() == []
