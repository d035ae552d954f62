"""One ``clone_batch`` run: take a batch as far as it can go now.

Reads the batch's state afresh and does the step it needs (``services.clones`` tells the
whole life of a batch): ask the peer to stage it (``clones_stage``), submit it to the mover
(``clones_batch``) and, if the task ends within ``settle_wait_seconds``, settle it at once,
or poll and settle a task submitted earlier (``clones_settle``). A step that cannot go on
now raises ``BatchDeferred`` after backing the batch off; a run killed anywhere is finished
by the next (each step is one short transaction, network calls outside them).
"""

from __future__ import annotations

import time

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services.clones_batch import BatchOutcome, batch_row, defer, submit
from librarian_dagster.services.clones_schedule import release
from librarian_dagster.services.clones_settle import poll, settle
from librarian_dagster.services.clones_stage import stage
from librarian_dagster.services.peers import PeerLinks
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import BatchStatus
from librarian_dagster.storage.movers.protocol import Mover, MoverError, TaskStatus

SETTLE_POLL_SECONDS = 0.25


def run_batch(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    batch_id: int,
    *,
    links: PeerLinks,
    movers: dict[str, Mover],
) -> BatchOutcome:
    """Take the batch as far as it can go now; raises ``BatchDeferred`` to be retried later."""
    started = time.monotonic()
    with catalogue.session() as session:
        batch = batch_row(session, batch_id)
        if batch is None:
            return BatchOutcome(batch_id, "?", "over", "no such batch")
        outcome = BatchOutcome(batch_id, batch.librarian.name, "over", mover=batch.mover)
        status, task_id, mover_name = batch.status, batch.task_id, batch.mover
        outcome.books, outcome.bytes = batch.file_count, batch.total_bytes
    if status.final:
        outcome.detail = f"already {status.value}"
        return outcome
    mover = movers.get(mover_name)
    if status == BatchStatus.INITIATED:
        stage(catalogue, settings, links, batch_id, outcome)
        with catalogue.session() as session:
            batch = batch_row(session, batch_id)
            assert batch is not None
            status = batch.status
            outcome.books, outcome.bytes = batch.file_count, batch.total_bytes
    if status in (BatchStatus.STAGED, BatchStatus.SUBMITTING):
        if mover is None:
            outcome.detail = f"no {mover_name!r} mover on this librarian (check [globus])"
            raise defer(catalogue, settings, batch_id, outcome)
        submit(catalogue, settings, mover, batch_id, outcome)
        if outcome.step == "submitted":
            _settle_soon(catalogue, settings, mover, batch_id, outcome)
    elif status == BatchStatus.ONGOING and mover is not None and task_id is not None:
        poll(catalogue, settings, mover, batch_id, task_id, outcome)
    release(catalogue, batch_id)
    outcome.seconds = time.monotonic() - started
    return outcome


def _settle_soon(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    mover: Mover,
    batch_id: int,
    outcome: BatchOutcome,
) -> None:
    """A task that ends within ``settle_wait_seconds`` is settled by the run that submitted it
    (a small batch on the local mover takes a second or two): one sensor tick and one run
    less before the peer hears. A longer one is left to the transfers sensor, as is any
    trouble asking the mover."""
    deadline = time.monotonic() + settings.transfer.settle_wait_seconds
    task_id = outcome.task_id
    assert task_id is not None
    while time.monotonic() < deadline:
        try:
            report = mover.status(task_id)
        except MoverError:
            return
        if report.status.final:
            settle(catalogue, settings, report, batch_id, outcome)
            return
        if report.status == TaskStatus.STALLED:
            return
        time.sleep(SETTLE_POLL_SECONDS)
