"""What peers tell us about clones, and what they ask: the callback routes' services.

Receiver's side (ids are our incoming transfers): ``mark_staged`` (the sender's mover
delivered), ``fail_from_source`` (the sender gave up), ``clone_states`` (the sender asks
what became of books it sent long ago). Sender's side (ids are our outgoing transfers):
``complete_clones`` (the peer stored them: remote instances) and ``fail_outgoing`` (the
peer refused one: it is sent again later, or fails for good).

Every handler is idempotent (callbacks arrive at least once) and checks that each transfer
involves the caller: 404 for an id we do not have, 403 for another peer's (an admin, passed
as ``sender=None``, may act on any). A refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    OutgoingTransfer,
    Store,
)
from librarian_dagster.services.clones_batch import schedule_resend
from librarian_dagster.services.copies import record_remote_instances
from librarian_dagster.services.errors import Forbidden, NotFound
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import Staging, discard_quietly, fail, staging_of
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import PENDING_STATUSES, Severity, TransferKind, TransferStatus
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.wire import (
    CloneAck,
    CloneAcks,
    CloneComplete,
    CloneState,
    CloneStatusRequest,
    CloneStatusResponse,
    FailedClone,
)

Row = TypeVar("Row", IncomingTransfer, OutgoingTransfer)


def pending_from(session: Session, sender: Librarian, transfer_id: int) -> IncomingTransfer | None:
    return session.scalar(
        select(IncomingTransfer).where(
            IncomingTransfer.librarian_id == sender.id,
            IncomingTransfer.source_transfer_id == transfer_id,
            IncomingTransfer.status.in_(PENDING_STATUSES),
        )
    )


def held_store(session: Session, file: File) -> str | None:
    """A store where we hold an available copy of ``file``."""
    return session.scalar(
        select(Store.name)
        .join(Instance, Instance.store_id == Store.id)
        .where(Instance.file_id == file.id, Instance.available)
        .limit(1)
    )


def _involving(
    rows: Iterable[Row], wanted: Sequence[int], sender: Librarian | None, what: str, link: str
) -> list[Row]:
    """``rows`` in the order of ``wanted``: 404 for an id we do not have, 403 for one that
    does not involve ``sender`` (``None``: an admin, who may act on any)."""
    by_id = {row.id: row for row in rows}
    for transfer_id in wanted:
        row = by_id.get(transfer_id)
        if row is None:
            raise NotFound(f"no {what} {transfer_id}")
        if sender is not None and row.librarian_id != sender.id:
            raise Forbidden(f"{what} {transfer_id} {link} {sender.name}")
    return [by_id[transfer_id] for transfer_id in wanted]


def _own_transfers(
    session: Session, sender: Librarian | None, transfer_ids: Sequence[int]
) -> list[IncomingTransfer]:
    """Our incoming clone transfers by id, locked (see ``_involving``)."""
    wanted = list(dict.fromkeys(transfer_ids))
    rows = session.scalars(
        select(IncomingTransfer)
        .where(IncomingTransfer.id.in_(wanted), IncomingTransfer.kind == TransferKind.CLONE)
        .with_for_update()
    )
    return _involving(rows, wanted, sender, "incoming clone", "does not come from")


def mark_staged(
    session: Session, sender: Librarian | None, transfer_ids: Sequence[int]
) -> CloneAcks:
    """The sender's mover put these books in our staging: they await verification."""
    acks = []
    for transfer in _own_transfers(session, sender, transfer_ids):
        if transfer.status == TransferStatus.INITIATED:
            transfer.status = TransferStatus.STAGED
            transfer.launched_at = None
            result = "recorded"
        elif transfer.status in PENDING_STATUSES or transfer.status == TransferStatus.STORED:
            result = "already"
        else:
            result = "ignored"
        acks.append(CloneAck(transfer_id=transfer.id, result=result, status=transfer.status))
    session.flush()
    return CloneAcks(items=acks)


def fail_from_source(
    session: Session,
    stores: dict[str, LocalStore],
    sender: Librarian | None,
    failures: Sequence[tuple[int, str]],
) -> tuple[CloneAcks, list[Staging]]:
    """The sender gave up on these (its mover failed, or it cancelled): fail them here.

    A book being verified right now is left to its run. Returns the stagings to remove once
    this transaction has committed.
    """
    reasons = dict(failures)
    acks, removals = [], []
    for transfer in _own_transfers(session, sender, list(reasons)):
        if transfer.status in (TransferStatus.INITIATED, TransferStatus.STAGED):
            fail(transfer, f"the sender gave up: {reasons[transfer.id]}"[:4000])
            removals.append(staging_of(transfer, stores))
            result = "recorded"
        elif transfer.status == TransferStatus.VERIFYING:
            result = "ignored"
        else:
            result = "already"
        acks.append(CloneAck(transfer_id=transfer.id, result=result, status=transfer.status))
    session.flush()
    return CloneAcks(items=acks), removals


def clone_states(
    session: Session, sender: Librarian, request: CloneStatusRequest
) -> CloneStatusResponse:
    """What became of books the sender sent long ago: held here, on their way, or not."""
    states = []
    for query in request.transfers:
        file = session.scalar(select(File).where(File.name == query.name))
        pending = pending_from(session, sender, query.transfer_id)
        store = held_store(session, file) if file is not None else None
        if file is not None and Checksum.parse(file.checksum) != Checksum.parse(query.checksum):
            state = CloneState(
                transfer_id=query.transfer_id,
                state="conflict",
                reason=f"held here with checksum {file.checksum}",
            )
        elif file is not None and store is None:  # catalogued, but no copy in service
            state = CloneState(
                transfer_id=query.transfer_id,
                state="in_progress",
                reason="catalogued here, but no copy is in service (repair first)",
            )
        elif file is not None:
            state = CloneState(transfer_id=query.transfer_id, state="held", store=store)
        elif pending is not None:
            state = CloneState(
                transfer_id=query.transfer_id, state="in_progress", status=pending.status
            )
        else:
            last = session.scalar(
                select(IncomingTransfer)
                .where(
                    IncomingTransfer.librarian_id == sender.id,
                    IncomingTransfer.source_transfer_id == query.transfer_id,
                )
                .order_by(IncomingTransfer.id.desc())
                .limit(1)
            )
            state = CloneState(
                transfer_id=query.transfer_id,
                state="absent",
                status=last.status if last is not None else None,
                reason=last.failure_reason if last is not None else "never staged here",
            )
        states.append(state)
    return CloneStatusResponse(items=states)


def discard_all(stagings: Sequence[Staging]) -> None:
    for staging in stagings:
        discard_quietly(staging, "the sender gave up")


# -- the sender's side: our outgoing transfers -------------------------------------------


def _own_outgoing(
    session: Session, sender: Librarian | None, transfer_ids: Sequence[int]
) -> list[OutgoingTransfer]:
    """Our outgoing transfers by id, locked (see ``_involving``)."""
    wanted = list(dict.fromkeys(transfer_ids))
    rows = session.scalars(
        select(OutgoingTransfer)
        .where(OutgoingTransfer.id.in_(wanted))
        .options(selectinload(OutgoingTransfer.file), selectinload(OutgoingTransfer.librarian))
        .with_for_update()
    )
    return _involving(rows, wanted, sender, "outgoing transfer", "was not sent to")


def complete_clones(
    session: Session, sender: Librarian | None, request: CloneComplete
) -> CloneAcks:
    """The peer verified and stored these books: each becomes a remote instance there.

    A book the peer stored with another checksum than ours is not recorded (an event says
    so): two books under one name is for an operator to sort out.
    """
    acks = []
    by_id = {item.transfer_id: item for item in request.transfers}
    now = datetime.now(UTC)
    rows = _own_outgoing(session, sender, list(by_id))
    held: list[tuple[int, str]] = []
    stored: list[OutgoingTransfer] = []
    for row in rows:
        item = by_id[row.id]
        file: File = row.file
        try:
            same = Checksum.parse(item.checksum) == Checksum.parse(file.checksum)
        except ChecksumError:
            same = False
        if not same:
            record_event(
                session,
                Severity.ERROR,
                "clone_checksum_differs",
                f"{row.librarian.name} says it stored {file.name!r} with checksum "
                f"{item.checksum[:200]}, but ours is {file.checksum}; not recorded as a copy",
                subject=file.name,
                details={"transfer_id": row.id, "peer": row.librarian.name},
            )
            acks.append(CloneAck(transfer_id=row.id, result="ignored", status=row.status))
            continue
        held.append((file.id, item.store))
        stored.append(row)
    peers = {row.librarian_id for row in stored}
    news: set[tuple[int, str]] = set()
    for peer_id in peers:  # (one peer calls: one round of queries)
        mine = [copy for row, copy in zip(stored, held, strict=True) if row.librarian_id == peer_id]
        news |= record_remote_instances(session, peer_id, mine, verified=True)
    for row, copy in zip(stored, held, strict=True):
        new = copy in news or row.status != TransferStatus.STORED
        row.status = TransferStatus.STORED  # failure_reason stays: why earlier tries failed
        row.completed_at = row.completed_at if not new else now
        acks.append(
            CloneAck(transfer_id=row.id, result="recorded" if new else "already", status=row.status)
        )
    session.flush()
    return CloneAcks(items=acks)


def fail_outgoing(
    session: Session,
    settings: LibrarianSettings,
    sender: Librarian | None,
    failures: Sequence[FailedClone],
) -> CloneAcks:
    """The peer refused these books (a wrong checksum after the move, say): send them again
    after a back-off, or fail them for good after ``max_attempts``.

    A failure that names an earlier attempt than the current one is stale (a repeated
    callback): it is ignored, so no attempt is counted twice.
    """
    acks = []
    by_id = {failure.transfer_id: failure for failure in failures}
    for row in _own_outgoing(session, sender, list(by_id)):
        failure = by_id[row.id]
        current = failure.remote_transfer_id in (None, row.remote_transfer_id)
        if row.status in (TransferStatus.ONGOING, TransferStatus.STAGED) and current:
            reason = f"{row.librarian.name}: {failure.reason}"
            again = schedule_resend(session, settings, row, reason)
            if again:  # (a book that failed for good has its own event)
                record_event(
                    session,
                    Severity.WARNING,
                    "clone_refused",
                    f"{reason}; {row.file.name!r} is sent again (attempt {row.attempts + 1} of "
                    f"{settings.transfer.max_attempts})",
                    subject=row.file.name,
                    details={"transfer_id": row.id, "peer": row.librarian.name},
                )
            result = "recorded"
        elif row.status in (TransferStatus.STORED, TransferStatus.FAILED):
            result = "already"
        else:
            result = "ignored"
        acks.append(CloneAck(transfer_id=row.id, result=result, status=row.status))
    session.flush()
    return CloneAcks(items=acks)
