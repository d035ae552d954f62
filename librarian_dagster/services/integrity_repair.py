"""Repairing a corrupt copy from a peer's good one, through the clone pipeline.

Here (the damaged side):

1. ``request_repairs`` (the ``repair_copies`` run, asked for by ``repair_sensor``): for each
   open record ``detected`` on a store whose burst guard is down, a good copy in another
   store here is copied over it (``integrity_repair_local``); failing that, the peers
   holding the book
   are asked, most recently verified first, to re-read their copy now
   (``POST /files/{name}/validate``); the first whose copy matches is asked to send it
   again (``POST /clones/resend``) and the record becomes ``refetching``. No peer holds it:
   ``lost`` (an operator must act; the copy stays, out of service). Every peer answered
   and none has a good copy: ``lost`` too. A peer that could not be asked (or whose
   re-send request failed): tried again after ``RETRY_AFTER``, not counted. A
   ``refetching`` record whose copy never came is asked for again after ``REFETCH_TIMEOUT``;
   after ``MAX_REQUESTS`` such requests it is ``lost``. All on ``requested_at``, the
   repair's own clock (a pass re-reading the copy moves ``updated_at``, never this).
2. The peer's clone batch stages the book here: ``stage_repair`` gives it a staging
   directory in the *damaged copy's store* (``clones_incoming`` calls it for a book we
   have catalogued with the same checksum and no copy in service).
3. Ingest verifies the new bytes like any clone; only then is the bad copy set aside
   (``storage.quarantine``), the new one renamed into its place and the record closed as
   repaired, in ``repair_recorded``; the set-aside copy is removed after that commit.

There (the peer with the good copy), ``resend``: for each name the caller held (we know of
its remote instance) and we hold in service, one outgoing clone transfer to it, unless one
is on its way; the clone pipeline does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    CorruptFile,
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    OutgoingTransfer,
    RemoteInstance,
    Store,
)
from librarian_dagster.services import corrupt
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.events import record_event
from librarian_dagster.services.integrity_guard import guarded_stores
from librarian_dagster.services.integrity_repair_local import repair_locally
from librarian_dagster.services.integrity_validate import ask_peer
from librarian_dagster.services.peers import PeerLinks, access_of
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import (
    OUTGOING_PENDING,
    CorruptionStatus,
    Severity,
    TransferKind,
    TransferStatus,
)
from librarian_dagster.storage.checksums import Checksum
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.wire.integrity import CLONES_RESEND, ResendAnswer, ResendRequest

RETRY_AFTER = timedelta(minutes=30)
REFETCH_TIMEOUT = timedelta(hours=24)
MAX_REQUESTS = 5
PER_RUN = 100


@dataclass(frozen=True)
class _Due:
    record_id: int
    name: str
    checksum: str
    store: str


def repairs_due(session: Session, now: datetime, limit: int = PER_RUN) -> list[_Due]:
    """Open records to ask a peer about now, on stores whose guard is down (bounded).

    By ``requested_at``, the repair's own clock: never asked; asked ``RETRY_AFTER`` ago
    and still ``detected`` (no peer could be asked); or ``refetching`` for longer than
    ``REFETCH_TIMEOUT`` (the copy never came).
    """
    guarded = guarded_stores(session)
    statement = (
        select(CorruptFile)
        .join(Store, CorruptFile.store_id == Store.id)
        .options(joinedload(CorruptFile.file), joinedload(CorruptFile.store))
        .where(
            # An explicit IN on status lets the (status, id) index bound the scan; the
            # conditions below only narrow it.
            CorruptFile.status.in_((CorruptionStatus.DETECTED, CorruptionStatus.REFETCHING)),
            CorruptFile.instance_id.is_not(None),
            CorruptFile.requested_at.is_(None)
            | (
                (CorruptFile.status == CorruptionStatus.DETECTED)
                & (CorruptFile.requested_at < now - RETRY_AFTER)
            )
            | (
                (CorruptFile.status == CorruptionStatus.REFETCHING)
                & (CorruptFile.requested_at < now - REFETCH_TIMEOUT)
            ),
        )
        .order_by(CorruptFile.id)
        .limit(limit)
    )
    if guarded:
        statement = statement.where(Store.name.not_in(sorted(guarded)))
    return [
        _Due(row.id, row.file.name, row.file.checksum, row.store.name)
        for row in session.scalars(statement).unique().all()
    ]


@dataclass
class RepairReport:
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (book, store here)
    requested: list[tuple[str, str]] = field(default_factory=list)  # (book, peer)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (book, why)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (book, why)


def _holders(session: Session, name: str) -> list[Librarian]:
    return list(
        session.scalars(
            select(Librarian)
            .join(RemoteInstance, RemoteInstance.librarian_id == Librarian.id)
            .join(File, RemoteInstance.file_id == File.id)
            .where(File.name == name)
            .order_by(RemoteInstance.verified_at.desc().nulls_last(), Librarian.name)
        )
        .unique()
        .all()
    )


def _settle(
    catalogue: Catalogue, due: _Due, status: CorruptionStatus | None, note: str, asked: bool
) -> None:
    """Record how asking about ``due`` went: ``asked`` (a peer was asked to re-send it)
    counts against ``MAX_REQUESTS``; ``status`` None leaves it ``detected`` for a retry."""
    with catalogue.session() as session:
        record = session.get(CorruptFile, due.record_id, with_for_update=True)
        if record is None or record.status not in (
            CorruptionStatus.DETECTED,
            CorruptionStatus.REFETCHING,
        ):
            return  # repaired or dismissed meanwhile
        record.requested_at = datetime.now(UTC)
        if asked:
            record.attempts += 1
            if status is None and record.attempts >= MAX_REQUESTS:
                status = CorruptionStatus.LOST
                note = f"{note}; gave up after {record.attempts} requests"
        if status is not None:
            record.status = status
        record.note = note[:2000]
        if record.status == CorruptionStatus.LOST:
            record_event(
                session,
                Severity.CRITICAL,
                "copy_lost",
                f"{due.name} in store {due.store} cannot be repaired automatically: {note}. "
                "The bad copy is kept, out of service; `librarian validate` shows the copies.",
                subject=due.name,
                details={"record_id": due.record_id},
            )


def request_repairs(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    links: PeerLinks,
    limit: int = PER_RUN,
    *,
    stores: dict[str, LocalStore] | None = None,
) -> RepairReport:
    """Repair the books due from another store here, else ask peers to re-send good copies
    (see the module and ``integrity_repair_local``; ``stores``: the stores open here).

    ``lost`` only when every holder (the other stores here included) answered and none has
    a good copy, or none holds it, or ``MAX_REQUESTS`` re-sends never arrived; a store or
    peer that could not be asked, or whose re-send request failed, means "ask again
    later", never "lost".
    """
    report = RepairReport()
    with catalogue.session() as session:
        due = repairs_due(session, datetime.now(UTC), limit)
        holders = {item.record_id: _holders(session, item.name) for item in due}
        session.expunge_all()
    for item in due:
        with catalogue.session() as session:  # a pass may have guarded the store meanwhile
            if guarded_stores(session, [item.store]):
                report.waiting.append((item.name, f"store {item.store} is guarded"))
                continue
        local = repair_locally(catalogue, stores or {}, item.record_id)
        if local.source is not None:
            report.repaired.append((item.name, local.source))
            continue
        peers, problems = holders[item.record_id], local.problems
        if not peers:
            why = "; ".join([*problems, "no peer holds a copy"])
            status = CorruptionStatus.LOST if local.settled else None
            _settle(catalogue, item, status, why, False)
            (report.lost if local.settled else report.waiting).append((item.name, why))
            continue
        all_answered = local.settled
        for peer in peers:
            answer = ask_peer(settings, links, peer, item.name, item.checksum)
            if answer.answer is None:
                all_answered = False
                problems.append(f"{peer.name}: {answer.problem}")
                continue
            if answer.verified_copies == 0:
                problems.append(f"{peer.name}: its copy does not verify")
                continue
            try:
                _ask_resend(settings, links, peer, item.name)
            except PeerCallFailed as error:
                all_answered = False
                problems.append(f"{peer.name}: asking it to re-send failed: {error}")
                continue
            note = f"{peer.name} verified its copy and was asked to send it again"
            _settle(catalogue, item, CorruptionStatus.REFETCHING, note, True)
            report.requested.append((item.name, peer.name))
            break
        else:
            why = "; ".join(problems)
            status = CorruptionStatus.LOST if all_answered else None
            _settle(catalogue, item, status, why, False)
            (report.lost if all_answered else report.waiting).append((item.name, why))
    return report


def _ask_resend(settings: LibrarianSettings, links: PeerLinks, peer: Librarian, name: str) -> None:
    link = links(access_of(settings, peer))
    try:
        link.post(CLONES_RESEND, ResendRequest(names=[name]).model_dump(mode="json"))
    finally:
        link.close()


# -- the peer with the good copy ------------------------------------------------------------


def resend(session: Session, caller: Librarian, names: Sequence[str]) -> list[ResendAnswer]:
    """One outgoing clone to ``caller`` per book it held and we hold (see the module)."""
    files = {file.name: file for file in session.scalars(select(File).where(File.name.in_(names)))}
    answers = []
    for name in names:
        file = files.get(name)
        if file is None:
            answers.append(ResendAnswer(name=name, answer="unknown"))
            continue
        held_there = session.scalar(
            select(RemoteInstance.id).where(
                RemoteInstance.file_id == file.id, RemoteInstance.librarian_id == caller.id
            )
        )
        if held_there is None:
            answers.append(ResendAnswer(name=name, answer="not_yours"))
            continue
        in_service = session.scalar(
            select(Instance.id).where(Instance.file_id == file.id, Instance.available).limit(1)
        )
        if in_service is None:
            answers.append(ResendAnswer(name=name, answer="not_held"))
            continue
        pending = session.scalar(
            select(OutgoingTransfer.id).where(
                OutgoingTransfer.file_id == file.id,
                OutgoingTransfer.librarian_id == caller.id,
                OutgoingTransfer.status.in_(OUTGOING_PENDING),
            )
        )
        if pending is not None:
            answers.append(ResendAnswer(name=name, answer="on_its_way", transfer_id=pending))
            continue
        now = datetime.now(UTC)
        row = OutgoingTransfer(
            file_id=file.id,
            librarian_id=caller.id,
            status=TransferStatus.INITIATED,
            next_attempt_at=now,
            failure_reason=f"re-sent: {caller.name}'s copy is corrupt",
        )
        session.add(row)
        session.flush()
        answers.append(ResendAnswer(name=name, answer="queued", transfer_id=row.id))
    return answers


# -- back here: staging and recording the good copy ----------------------------------------


def repair_store(session: Session, file: File) -> Store | None:
    """The store of ``file``'s copy that is waiting for a repair, if one is (and the
    store's guard is down): where a re-sent copy is staged."""
    record = session.scalar(
        select(CorruptFile)
        .options(joinedload(CorruptFile.store))
        .where(
            CorruptFile.file_id == file.id,
            CorruptFile.instance_id.is_not(None),
            CorruptFile.status.in_((CorruptionStatus.DETECTED, CorruptionStatus.REFETCHING)),
        )
        .order_by(CorruptFile.id)
        .limit(1)
    )
    if record is None or record.store.name in guarded_stores(session, [record.store.name]):
        return None
    return record.store


def repair_wanted(session: Session, transfer: IncomingTransfer, expected: Checksum | None) -> bool:
    """Whether an arriving clone repairs a copy here: a book catalogued with the same
    checksum whose copy in the transfer's store has an open record. (A record an operator
    dismissed is not open: then the clone is refused, and nothing is set aside.)"""
    if transfer.kind != TransferKind.CLONE or expected is None:
        return False
    file = session.scalar(select(File).where(File.name == transfer.name))
    if file is None or Checksum.parse(file.checksum) != expected:
        return False
    record = session.scalar(
        select(CorruptFile.id)
        .where(
            CorruptFile.file_id == file.id,
            CorruptFile.store_id == transfer.store_id,
            CorruptFile.status.in_(corrupt.OPEN_FOR_REPAIR),
        )
        .limit(1)
    )
    return record is not None


def record_repair(
    session: Session, transfer: IncomingTransfer, store_id: int, path: str, hooks: Any
) -> bool:
    """The re-sent copy is verified and in place: the copy is in service again, its open
    records closed as repaired (with their events), the transfer stored, the sender told
    (the kind's hook). Whether a record was closed (else the set-aside copy is kept)."""
    file = session.scalars(select(File).where(File.name == transfer.name)).one()
    sender = (
        session.scalar(select(Librarian.name).where(Librarian.id == transfer.librarian_id))
        if transfer.librarian_id is not None
        else None
    ) or "a peer"
    closed = corrupt.repair_recorded(session, file, store_id, path, by=f"re-sent by {sender}")
    transfer.status = TransferStatus.STORED
    transfer.completed_at = datetime.now(UTC)
    transfer.checksum = file.checksum
    hooks.on_stored(session, transfer, file)
    return closed > 0
