"""A transfer frozen by a mover that never finishes ends failed, with a reason, after its
retry budget; its age is counted from its first start, never from a retry."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.models import Event, OutgoingTransfer, TransferBatch
from librarian_dagster.services import clones, clones_run
from librarian_dagster.services.clones_batch import BatchDeferred
from librarian_dagster.states import BATCH_OPEN, TransferStatus
from librarian_dagster.storage.movers.protocol import MoveItem, TaskReport, TaskStatus
from tests.clone_helpers import befriend_both, clone_sites, links_for
from tests.test_clones import upload


class FrozenMover:
    """Takes every task and never moves a byte; does not even listen to a cancel."""

    name = "local"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def new_submission_id(self) -> str:
        return uuid.uuid4().hex

    def submit(
        self,
        items: Sequence[MoveItem],
        *,
        label: str,
        submission_id: str,
        endpoint: str | None = None,
    ) -> str:
        if submission_id not in self.submitted:
            self.submitted.append(submission_id)
        return submission_id

    def status(self, task_id: str) -> TaskReport:
        return TaskReport(task_id, TaskStatus.ACTIVE, (), bytes_moved=0)

    def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)


def test_a_frozen_transfer_fails_after_its_retry_budget_with_its_first_start(
    tmp_path: Path,
) -> None:
    with clone_sites(
        tmp_path, ["site-a", "site-b"], max_attempts=2, stuck_after_hours=0.5 / 3600
    ) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        (name,) = upload(a, tmp_path, 1)
        mover = FrozenMover()
        with a.catalogue.session() as session:
            assert session.scalars(select(OutgoingTransfer)).all() == []
        first_start = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            clones.form_batches(a.catalogue, a.settings)
            with a.catalogue.session() as session:
                row = session.scalars(select(OutgoingTransfer)).one()
                first_start = first_start or row.created_at
                if row.status == TransferStatus.FAILED:
                    break
                open_ids = session.scalars(
                    select(TransferBatch.id).where(TransferBatch.status.in_(BATCH_OPEN))
                ).all()
            for batch_id in open_ids:
                with contextlib.suppress(BatchDeferred):
                    clones_run.run_batch(
                        a.catalogue,
                        a.settings,
                        batch_id,
                        links=links_for(sites),
                        movers={"local": mover},
                    )
            time.sleep(0.3)
        with a.catalogue.session() as session:
            row = session.scalars(select(OutgoingTransfer)).one()
            assert row.status == TransferStatus.FAILED, row.failure_reason
            assert row.attempts == 2
            assert "no progress since" in (row.failure_reason or "")
            assert row.created_at == first_start  # the age is never reset
            stuck = session.scalars(select(Event).where(Event.kind == "transfer_stuck")).all()
            failed = session.scalars(select(Event).where(Event.kind == "clone_failed")).all()
            assert len(stuck) == 2 and len(failed) == 1 and name in failed[0].message
        assert len(mover.submitted) == 2 and len(mover.cancelled) == 2
