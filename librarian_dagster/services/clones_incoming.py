"""Clones arriving from a peer: stage a batch, hear that its bytes are here, store, call back.

The sender's side is ``services.clones``; this is the receiver's (SPEC §1.2):

1. ``stage_clones`` (``POST /clones/stage``): one ``clone`` incoming transfer and staging
   directory per book, all or nothing (a bad item is 400, no room 507, and nothing was
   made). A book we hold with the same checksum is answered ``held``; another book under
   that name is a ``conflict`` (an event here; never overwritten); a book we are already
   receiving from this sender is answered as before (a repeated request after a lost
   answer), so the request is idempotent per sender transfer id.
2. ``mark_staged`` (``POST /clones/staged``): the mover delivered; the transfers become
   ``staged`` and a ``receive_clones`` run verifies them like any upload
   (``services.ingest``: one verify-and-commit path).
3. ``CloneHooks``: a stored book records a remote instance at the sender (so it is never
   sent back) and owes the sender ``/clones/complete``; a refused one owes it
   ``/clones/fail`` and its bad bytes are removed (the sender keeps the original). Both
   callbacks are written to the outbox in the transaction that records the outcome.

Every caller is a peer (``require_calling_peer``); a transfer that is not the caller's is
403 (an admin may act on any), an id we do not have is 404, and a refused request changed
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    RemoteInstance,
    Store,
)
from librarian_dagster.services import outbox
from librarian_dagster.services.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
)
from librarian_dagster.services.events import record_event
from librarian_dagster.services.incoming import (
    AfterCommit,
    Staging,
    discard_quietly,
    pending_for_name,
    stage_transfer,
)
from librarian_dagster.services.uploads import choose_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import (
    PENDING_STATUSES,
    MoverName,
    Severity,
    StageAnswer,
    TransferKind,
    TransferStatus,
)
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StoreFullError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.addressing import collection_path, local_address
from librarian_dagster.storage.names import InvalidNameError, normalise_name, validate_name
from librarian_dagster.wire import (
    CloneItem,
    CloneStageRequest,
    CloneStageResponse,
    StagedClone,
)
from librarian_dagster.wire.clones import CLONES_COMPLETE, CLONES_FAIL


def _check_items(items: Sequence[CloneItem]) -> None:
    """Every item well-formed and none twice, or 400 before anything is made."""
    names: set[str] = set()
    ids: set[int] = set()
    for item in items:
        try:
            name = validate_name(item.name)
        except InvalidNameError as error:
            raise InvalidRequest(f"invalid name {item.name[:200]!r}: {error}") from None
        if normalise_name(name) != name:
            raise InvalidRequest(f"{name!r} is not in NFC, the form every name is catalogued in")
        try:
            Checksum.parse(item.checksum)
        except ChecksumError as error:
            raise InvalidRequest(f"{name!r}: invalid checksum: {error}") from None
        if name in names:
            raise InvalidRequest(f"{name!r} is in the request twice")
        if item.transfer_id in ids:
            raise InvalidRequest(f"transfer {item.transfer_id} is in the request twice")
        names.add(name)
        ids.add(item.transfer_id)


def _address(settings: LibrarianSettings, mover: MoverName, transfer: IncomingTransfer) -> str:
    """The staging path as the sender's mover will address it."""
    if mover is MoverName.GLOBUS and settings.globus is not None:
        return collection_path(
            transfer.staging_path,
            local_root=settings.globus.local_root,
            path_prefix=settings.globus.path_prefix,
        )
    return local_address(transfer.staging_path)


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


def _answer_existing(
    session: Session, sender: Librarian, item: CloneItem, file: File
) -> StagedClone:
    """A name we have catalogued: the same book (held) or another one (conflict)."""
    if Checksum.parse(file.checksum) == Checksum.parse(item.checksum):
        return StagedClone(
            transfer_id=item.transfer_id,
            answer=StageAnswer.HELD,
            store=held_store(session, file),
        )
    reason = (
        f"{sender.name} sent {item.name!r} with checksum {item.checksum}, but the book of "
        f"that name here has {file.checksum}: it is not overwritten"
    )
    record_event(
        session,
        Severity.ERROR,
        "clone_conflict",
        reason,
        subject=item.name,
        details={"peer": sender.name, "transfer_id": item.transfer_id},
    )
    return StagedClone(transfer_id=item.transfer_id, answer=StageAnswer.CONFLICT, reason=reason)


def stage_clones(
    session: Session,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    sender: Librarian,
    request: CloneStageRequest,
) -> CloneStageResponse:
    """Stage a batch for ``sender``: all the new books in one store, or none (see above)."""
    _check_items(request.items)
    if request.mover is MoverName.GLOBUS and settings.globus is None:
        raise Conflict("this librarian has no Globus collection ([globus] is not configured)")
    answers: dict[int, StagedClone] = {}
    new: list[CloneItem] = []
    repeated: list[tuple[CloneItem, IncomingTransfer]] = []
    for item in request.items:
        pending = pending_from(session, sender, item.transfer_id)
        file = session.scalar(select(File).where(File.name == item.name))
        if pending is not None and pending.status == TransferStatus.INITIATED:
            repeated.append((item, pending))
        elif pending is not None:
            answers[item.transfer_id] = StagedClone(
                transfer_id=item.transfer_id,
                answer=StageAnswer.IN_PROGRESS,
                remote_transfer_id=pending.id,
                reason=f"already {pending.status.value} here",
            )
        elif file is not None:
            answers[item.transfer_id] = _answer_existing(session, sender, item, file)
        elif pending_for_name(session, item.name) is not None:
            answers[item.transfer_id] = StagedClone(
                transfer_id=item.transfer_id,
                answer=StageAnswer.IN_PROGRESS,
                reason="another transfer of this name is pending here",
            )
        else:
            new.append(item)
    for item, transfer in repeated:
        answers[item.transfer_id] = _staged_answer(settings, request.mover, item, transfer)
    for item, transfer in _stage_new(session, settings, stores, sender, new):
        answers[item.transfer_id] = _staged_answer(settings, request.mover, item, transfer)
    endpoint = settings.globus.collection_id if request.mover is MoverName.GLOBUS else None
    return CloneStageResponse(
        items=[answers[item.transfer_id] for item in request.items],
        endpoint=endpoint if settings.globus is not None else None,
    )


def _staged_answer(
    settings: LibrarianSettings, mover: MoverName, item: CloneItem, transfer: IncomingTransfer
) -> StagedClone:
    return StagedClone(
        transfer_id=item.transfer_id,
        answer=StageAnswer.STAGED,
        remote_transfer_id=transfer.id,
        staging_path=_address(settings, mover, transfer),
    )


def _stage_new(
    session: Session,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    sender: Librarian,
    items: Sequence[CloneItem],
) -> list[tuple[CloneItem, IncomingTransfer]]:
    """A transfer and staging directory per item, in one store with room for all (else 507).

    If any fails, the staging directories already made are removed again (the caller's
    transaction rolls back the rows): all or nothing.
    """
    if not items:
        return []
    total = sum(item.size for item in items)
    row, store = choose_store(session, stores, settings.ingest, total, uploader=None)
    made: list[tuple[CloneItem, IncomingTransfer]] = []
    try:
        for item in items:
            transfer = stage_transfer(
                session,
                row,
                store,
                kind=TransferKind.CLONE,
                name=item.name,
                size=item.size,
                checksum=str(Checksum.parse(item.checksum)),
                uploader=item.uploader,
                source=item.source,
            )
            transfer.librarian_id = sender.id
            transfer.source_transfer_id = item.transfer_id
            transfer.source_store = item.source_store
            made.append((item, transfer))
        session.flush()
    except BaseException as error:
        for _, transfer in made:
            discard_quietly(Staging(store, transfer.staging_id, transfer.staging_path), "undo")
        if isinstance(error, StoreFullError):
            raise InsufficientStorage(str(error)) from None
        raise
    return made


class CloneHooks:
    """What ingest does at the end of a clone (``incoming.KindHooks``): the sender hears.

    Stored: a remote instance at the sender (it holds the original: never send it back)
    and ``/clones/complete`` owed to it. Refused: ``/clones/fail`` owed to it, and the bad
    bytes removed once the failure has committed (the sender's copy is the original).
    """

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None:
        if transfer.librarian_id is None or transfer.source_transfer_id is None:
            return
        record_remote_instance(
            session, file.id, transfer.librarian_id, transfer.source_store or "unknown"
        )
        outbox.enqueue(
            session,
            transfer.librarian_id,
            CLONES_COMPLETE,
            {
                "transfers": [
                    {
                        "transfer_id": transfer.source_transfer_id,
                        "store": transfer.store.name,
                        "checksum": file.checksum,
                    }
                ]
            },
        )

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit:
        if transfer.librarian_id is not None and transfer.source_transfer_id is not None:
            outbox.enqueue(
                session,
                transfer.librarian_id,
                CLONES_FAIL,
                {
                    "role": "destination",
                    "transfers": [
                        {
                            "transfer_id": transfer.source_transfer_id,
                            "reason": reason[:4000],
                            "remote_transfer_id": transfer.id,
                        }
                    ],
                },
            )

        def remove(catalogue: Catalogue) -> None:
            discard_quietly(staging, f"refused clone {transfer.id}")

        return remove


def record_remote_instance(
    session: Session,
    file_id: int,
    librarian_id: int,
    store_name: str,
    *,
    verified: bool = False,
) -> bool:
    """A peer holds ``file_id`` in ``store_name``; True if this is news (idempotent).

    ``verified``: the peer says it verified its copy just now (it stored our bytes after
    checking their checksum, or holds a book with our checksum).
    """
    existing = session.scalar(
        select(RemoteInstance).where(
            RemoteInstance.file_id == file_id,
            RemoteInstance.librarian_id == librarian_id,
            RemoteInstance.store_name == store_name,
        )
    )
    now = datetime.now(UTC) if verified else None
    if existing is not None:
        if now is not None:
            existing.verified_at = now
        return False
    session.add(
        RemoteInstance(
            file_id=file_id, librarian_id=librarian_id, store_name=store_name, verified_at=now
        )
    )
    session.flush()
    return True


__all__ = [
    "CloneHooks",
    "record_remote_instance",
    "stage_clones",
]
