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
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    Store,
)
from librarian_dagster.services import outbox
from librarian_dagster.services.copies import record_remote_instance
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
    stage_transfer,
)
from librarian_dagster.services.integrity_repair import repair_store
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


def _answer_existing(
    session: Session, sender: Librarian, item: CloneItem, file: File, known: _Known
) -> StagedClone:
    """A name we have catalogued: the same book (held, if a copy is in service here; else
    it is being repaired, and the sender asks again later) or another one (conflict)."""
    if Checksum.parse(file.checksum) == Checksum.parse(item.checksum):
        store = known.in_service.get(file.id)
        if store is None:
            return _busy(item, "catalogued here, but no copy is in service (repair first)")
        return StagedClone(transfer_id=item.transfer_id, answer=StageAnswer.HELD, store=store)
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


@dataclass
class _Known:
    """What the catalogue knows of a batch's books, read in a few queries (not per book)."""

    files: dict[str, File]
    in_service: dict[int, str]  # file id -> a store holding an available copy
    ours: dict[int, IncomingTransfer]  # the sender's transfer id -> our pending transfer
    pending_names: set[str]  # names some pending transfer (any sender's, an upload) holds


def _known(session: Session, sender: Librarian, items: Sequence[CloneItem]) -> _Known:
    names = [item.name for item in items]
    files = {f.name: f for f in session.scalars(select(File).where(File.name.in_(names)))}
    in_service = dict(
        session.execute(
            select(Instance.file_id, Store.name)
            .join(Store, Store.id == Instance.store_id)
            .where(Instance.file_id.in_([f.id for f in files.values()]), Instance.available)
        )
        .tuples()
        .all()
    )
    pending = session.scalars(
        select(IncomingTransfer).where(
            IncomingTransfer.name.in_(names), IncomingTransfer.status.in_(PENDING_STATUSES)
        )
    ).all()
    ours = {
        t.source_transfer_id: t
        for t in pending
        if t.librarian_id == sender.id and t.source_transfer_id is not None
    }
    return _Known(files, in_service, ours, {t.name for t in pending})


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
    known = _known(session, sender, request.items)
    answers: dict[int, StagedClone] = {}
    new: list[CloneItem] = []
    repairs: list[tuple[CloneItem, Store]] = []
    for item in request.items:
        ours = known.ours.get(item.transfer_id)
        file = known.files.get(item.name)
        if ours is not None and ours.status == TransferStatus.INITIATED:
            answers[item.transfer_id] = _staged_answer(settings, request.mover, item, ours)
        elif ours is not None:
            answers[item.transfer_id] = _busy(item, f"already {ours.status.value} here", ours)
        elif (
            file is not None
            and item.name not in known.pending_names
            and (store := _repairing(session, item, file, known))
        ):
            repairs.append((item, store))
        elif file is not None:
            answers[item.transfer_id] = _answer_existing(session, sender, item, file, known)
        elif item.name in known.pending_names:
            answers[item.transfer_id] = _busy(item, "another transfer of it is pending here")
        else:
            new.append(item)
    staged = _stage_new(session, settings, stores, sender, new)
    for item, store_row in repairs:  # into the damaged copy's store
        staged += _stage_new(session, settings, stores, sender, [item], store_row)
    for item, transfer in staged:
        answers[item.transfer_id] = _staged_answer(settings, request.mover, item, transfer)
    endpoint = settings.globus.collection_id if request.mover is MoverName.GLOBUS else None
    return CloneStageResponse(
        items=[answers[item.transfer_id] for item in request.items],
        endpoint=endpoint if settings.globus is not None else None,
    )


def _busy(item: CloneItem, reason: str, ours: IncomingTransfer | None = None) -> StagedClone:
    return StagedClone(
        transfer_id=item.transfer_id,
        answer=StageAnswer.IN_PROGRESS,
        remote_transfer_id=ours.id if ours is not None else None,
        reason=reason,
    )


def _check_peer_cap(
    session: Session,
    settings: LibrarianSettings,
    sender: Librarian,
    size: int,
    store: LocalStore,
) -> None:
    """One peer's staged clones may reserve at most the share of a store's free space that
    one user's uploads may (``[ingest] max_reserved_fraction_per_user``): a peer cannot
    take all the room our uploads need (507 otherwise)."""
    reserved = int(
        session.scalar(
            select(func.coalesce(func.sum(IncomingTransfer.size), 0)).where(
                IncomingTransfer.librarian_id == sender.id,
                IncomingTransfer.status == TransferStatus.INITIATED,
            )
        )
        or 0
    )
    cap = int(store.free_bytes() * settings.ingest.max_reserved_fraction_per_user)
    if reserved + size > cap:
        raise InsufficientStorage(
            f"{sender.name}'s clones waiting here would reserve {reserved + size} bytes, over "
            f"its share of {cap} bytes of store {store.name!r}'s free space"
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


def _repairing(session: Session, item: CloneItem, file: File, known: _Known) -> Store | None:
    """The store to stage ``item`` in if it is a good copy re-sent to repair a bad one here
    (same checksum, no copy in service, a repair waiting: ``integrity_repair``)."""
    if file.id in known.in_service or Checksum.parse(file.checksum) != Checksum.parse(
        item.checksum
    ):
        return None
    return repair_store(session, file)


def _stage_new(
    session: Session,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    sender: Librarian,
    items: Sequence[CloneItem],
    into: Store | None = None,
) -> list[tuple[CloneItem, IncomingTransfer]]:
    """A transfer and staging directory per item, in one store with room for all (else 507);
    ``into`` names the store (a repair goes where the bad copy is).

    If any fails, the staging directories already made are removed again (the caller's
    transaction rolls back the rows): all or nothing.
    """
    if not items:
        return []
    total = sum(item.size for item in items)
    if into is not None and into.name in stores:
        row, store = into, stores[into.name]
    else:
        row, store = choose_store(session, stores, settings.ingest, total, uploader=None)
    _check_peer_cap(session, settings, sender, total, store)
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


__all__ = ["CloneHooks", "stage_clones"]
