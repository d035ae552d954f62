"""A clone batch whose mover task is over: what arrived goes on, the rest is sent again.

``poll`` asks the mover how the task is doing (a stalled task gets one operator event, not
one per poll); once it is over, ``settle`` records in one transaction which books arrived
(``staged``; the peer is owed ``/clones/staged``) and which did not (sent again after a
back-off, or failed for good after ``max_attempts``, with the mover's words): one bad book
does not cost the batch. A run killed while settling recorded nothing; the next reads the
same report. Books staged at a peer that never confirmed them are settled by asking it
(``reconcile``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Librarian, OutgoingTransfer
from librarian_dagster.services import outbox
from librarian_dagster.services.clones_batch import (
    BatchOutcome,
    batch_row,
    defer,
    rows_of,
    schedule_resend,
)
from librarian_dagster.services.copies import record_remote_instance
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.events import record_event
from librarian_dagster.services.peers import PeerLinks, access_of, record_contact
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import BatchStatus, Severity, TransferStatus
from librarian_dagster.storage.movers.protocol import (
    MoveItem,
    Mover,
    MoverError,
    TaskReport,
    TaskStatus,
    match_results,
)
from librarian_dagster.wire import CloneQuery, CloneStatusRequest
from librarian_dagster.wire.clones import CLONES_STAGED


def settle(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    report: TaskReport,
    batch_id: int,
    outcome: BatchOutcome,
) -> None:
    """The task is over: arrived books are staged at the peer (it is told), others re-sent.

    The report's results are matched to the books by destination (``match_results``: a
    directory book by the files under it; the peer verifies every checksum anyway, so a
    directory moved in part is caught there and sent again).
    """
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        assert batch is not None
        if batch.status != BatchStatus.ONGOING:
            outcome.step, outcome.detail = "over", f"already {batch.status.value}"
            return
        staged_ids: list[int] = []
        now = datetime.now(UTC)
        rows = rows_of(session, batch_id, TransferStatus.ONGOING)
        rows += rows_of(session, batch_id, TransferStatus.INITIATED)  # no copy at submit
        sent = [row for row in rows if row.status == TransferStatus.ONGOING]
        items = [
            MoveItem("", row.remote_staging_path or "", recursive=row.file.is_directory)
            for row in sent
        ]  # a final report has a verdict for each, in order
        verdicts = dict(zip(map(id, sent), match_results(report, items), strict=True))
        for row in rows:
            result = verdicts.get(id(row))
            if result is not None and result.done:
                row.status = TransferStatus.STAGED
                row.updated_at = now
                staged_ids.append(row.remote_transfer_id or 0)
                outcome.arrived.append(row.file.name)
                continue
            fault = (result.fault if result is not None else None) or report.fault
            fault = fault or ("no copy here to send" if row.source_path is None else "not moved")
            if schedule_resend(session, settings, row, f"{batch.mover}: {fault}"):
                outcome.resent.append(row.file.name)
            else:
                outcome.failed.append(row.file.name)
        if staged_ids:
            outcome.callbacks.append(
                outbox.enqueue(
                    session, batch.librarian_id, CLONES_STAGED, {"transfer_ids": staged_ids}
                )
            )
        batch.status = (
            BatchStatus.SUCCEEDED
            if not rows or len(staged_ids) == len(rows)
            else (
                BatchStatus.CANCELLED
                if report.status == TaskStatus.CANCELLED
                else BatchStatus.FAILED
            )
        )
        batch.completed_at = now
        batch.bytes_moved = report.bytes_moved
        batch.failure_reason = report.fault
    outcome.step, outcome.fault = "settled", report.fault
    outcome.bytes = report.bytes_moved
    outcome.detail = (
        f"{len(outcome.arrived)} arrived, {len(outcome.resent)} to be sent again, "
        f"{len(outcome.failed)} failed for good"
    )


def poll(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    mover: Mover,
    batch_id: int,
    task_id: str,
    outcome: BatchOutcome,
) -> None:
    """Ask the mover about the batch's task; settle it if it is over.

    A task the mover no longer knows, long after it was submitted (its state lost), is
    settled as failed: its books are sent again rather than waited for forever.
    """
    outcome.task_id = task_id
    try:
        report = mover.status(task_id)
    except MoverError as error:
        with catalogue.session() as session:
            batch = batch_row(session, batch_id)
            submitted = batch.submitted_at if batch is not None else None
        stale = timedelta(hours=settings.transfer.stale_after_hours)
        if submitted is not None and datetime.now(UTC) - submitted > stale:
            lost = TaskReport(task_id, TaskStatus.FAILED, fault=f"the task is lost: {error}")
            settle(catalogue, settings, lost, batch_id, outcome)
            return
        outcome.detail = f"could not ask the {mover.name} mover about task {task_id}: {error}"
        raise defer(catalogue, settings, batch_id, outcome) from error
    stuck_since = track_progress(catalogue, settings, batch_id, report.bytes_moved)
    if not report.status.final and stuck_since is not None:
        report = _give_up(catalogue, mover, batch_id, task_id, stuck_since)
    if report.status.final:
        settle(catalogue, settings, report, batch_id, outcome)
        return
    outcome.step, outcome.fault = "moving", report.fault
    outcome.detail = f"task {task_id} is {report.status.value}"
    if report.status == TaskStatus.STALLED:
        note_stall(catalogue, batch_id, mover.name, task_id, report.fault)


def track_progress(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    batch_id: int,
    bytes_moved: int,
    now: datetime | None = None,
) -> datetime | None:
    """Note a poll of the batch's task; the time of its last progress if it is stuck (no
    byte moved for ``[transfer] stuck_after_hours``, counted from its submission), else None.

    The sensor and the run both call it: the sensor asks for a run for a stuck task, and
    the run gives it up (``_give_up``).
    """
    now = now or datetime.now(UTC)
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        if batch is None:
            return None
        if bytes_moved > batch.bytes_moved or batch.progress_at is None:
            batch.progress_at = (batch.submitted_at or now) if bytes_moved == 0 else now
        batch.polled_at = now
        batch.bytes_moved = bytes_moved
        last = batch.progress_at
    if now - last > timedelta(hours=settings.transfer.stuck_after_hours):
        return last
    return None


def _give_up(
    catalogue: Catalogue, mover: Mover, batch_id: int, task_id: str, since: datetime
) -> TaskReport:
    """A task that moved nothing since ``since``: cancelled (if the mover still listens)
    and reported failed, so its books are sent again or, out of tries, failed for good."""
    fault = (
        f"no progress since {since:%Y-%m-%d %H:%M} UTC: {mover.name} task {task_id} was "
        "given up (stuck)"
    )
    try:
        mover.cancel(task_id)
    except MoverError as error:
        fault += f"; cancelling it failed: {error}"
    with catalogue.session() as session:
        record_event(
            session,
            Severity.WARNING,
            "transfer_stuck",
            f"batch {batch_id}: {fault}",
            subject=f"batch {batch_id}",
            details={"batch_id": batch_id, "task_id": task_id, "mover": mover.name},
        )
    return TaskReport(task_id, TaskStatus.FAILED, fault=fault)


def note_stall(
    catalogue: Catalogue, batch_id: int, mover: str, task_id: str, fault: str | None
) -> None:
    """One operator event per stalled batch (not one per poll): it needs a human."""
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        if batch is None or batch.failure_reason == f"stalled: {fault}":
            return
        batch.failure_reason = f"stalled: {fault}"
        record_event(
            session,
            Severity.ERROR,
            "mover_stalled",
            f"{mover} task {task_id} (batch {batch_id}) does not move and will not without an "
            f"operator: {fault}",
            subject=f"batch {batch_id}",
            details={"batch_id": batch_id, "task_id": task_id, "mover": mover},
        )


# -- books sent long ago and never confirmed ---------------------------------------------


def stale_transfers(
    session: Session, settings: LibrarianSettings, *, limit: int, now: datetime | None = None
) -> dict[int, list[int]]:
    """Per peer, books staged there longer than ``stale_after_hours`` ago with no answer."""
    before = (now or datetime.now(UTC)) - timedelta(hours=settings.transfer.stale_after_hours)
    rows = session.execute(
        select(OutgoingTransfer.librarian_id, OutgoingTransfer.id)
        .where(
            OutgoingTransfer.status == TransferStatus.STAGED,
            OutgoingTransfer.updated_at < before,
        )
        .order_by(OutgoingTransfer.id)
        .limit(limit)
    ).all()
    stale: dict[int, list[int]] = {}
    for row in rows:
        stale.setdefault(row.librarian_id, []).append(row.id)
    return stale


@dataclass
class Reconciled:
    peer: str
    held: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def reconcile(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    peer_id: int,
    transfer_ids: Sequence[int],
    links: PeerLinks,
) -> Reconciled:
    """Ask the peer about books it never confirmed: held (a remote instance), still on their
    way (wait another period), absent (sent again) or another book there (failed, event)."""
    with catalogue.session() as session:
        peer = session.get(Librarian, peer_id)
        assert peer is not None
        access = access_of(settings, peer)
        rows = session.scalars(
            select(OutgoingTransfer)
            .where(OutgoingTransfer.id.in_(list(transfer_ids)))
            .options(selectinload(OutgoingTransfer.file))
        ).all()
        request = CloneStatusRequest(
            transfers=[
                CloneQuery(transfer_id=row.id, name=row.file.name, checksum=row.file.checksum)
                for row in rows
            ]
        )
    outcome = Reconciled(access.name)
    link = links(access)
    try:
        answer = link.query(request)
    except PeerCallFailed as error:
        with catalogue.session() as session:
            record_contact(session, peer_id, str(error))
        raise
    finally:
        link.close()
    states = {state.transfer_id: state for state in answer.items}
    now = datetime.now(UTC)
    with catalogue.session() as session:
        record_contact(session, peer_id, None)
        for row in session.scalars(
            select(OutgoingTransfer)
            .where(OutgoingTransfer.id.in_(list(transfer_ids)))
            .options(selectinload(OutgoingTransfer.file), selectinload(OutgoingTransfer.librarian))
            .with_for_update()
        ):
            state = states.get(row.id)
            if row.status != TransferStatus.STAGED or state is None:
                continue
            name = row.file.name
            if state.state == "held":
                row.status, row.completed_at = TransferStatus.STORED, now
                record_remote_instance(
                    session, row.file_id, peer_id, state.store or "?", verified=True
                )
                outcome.held.append(name)
            elif state.state == "in_progress":
                row.updated_at = now  # asked again after another period
                outcome.waiting.append(name)
            elif state.state == "absent":
                reason = f"{access.name} does not have it ({state.reason or 'no reason given'})"
                if schedule_resend(session, settings, row, reason):
                    outcome.resent.append(name)
                else:
                    outcome.failed.append(name)
            else:
                row.status, row.completed_at = TransferStatus.FAILED, now
                row.failure_reason = f"{access.name}: {state.reason}"
                record_event(
                    session,
                    Severity.ERROR,
                    "clone_conflict",
                    row.failure_reason,
                    subject=name,
                    details={"transfer_id": row.id, "peer": access.name},
                )
                outcome.failed.append(name)
    return outcome
