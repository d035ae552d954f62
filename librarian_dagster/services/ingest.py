"""Ingest: verify a staged transfer and move it into its store, recording File + Instance.

One streaming read verifies size and checksum; the move is a rename; the catalogue records
the file, its instance and the transfer's success in one transaction. Each step can be
interrupted and the next attempt finishes the job:

- killed before the rename: the transfer is still ``verifying`` with its data in staging; a
  later attempt (claiming it because the run that held it is no longer alive) verifies and
  renames again;
- killed after the rename but before the catalogue commit: staging is empty and the store
  holds the data; a later attempt verifies the stored copy against the expected checksum and
  records it.

A verification failure marks the transfer ``failed`` with a reason the client shows, and so
does a transfer that keeps crashing its runs (after ``MAX_ATTEMPTS``): both go through
``_fail``, the one failure path. What else happens depends on the transfer's kind, through
its ``KindHooks``, called in the transaction that records the outcome: an upload's bad data
is removed once that transaction has committed (``uploads.UploadHooks``), an inbox book goes
back to its producer or stays in staging with an event (``inbox.InboxHooks``), a clone owes
its sender a callback through the outbox (``clones_incoming.CloneHooks``), and so does a
book from a drive (``sneaker_return.SneakerHooks``). A kind without
hooks keeps its data in staging and says so in an event: ingest never deletes what it was
not told it may.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Instance
from librarian_dagster.services.clones_incoming import CloneHooks
from librarian_dagster.services.events import record_event
from librarian_dagster.services.inbox import InboxHooks
from librarian_dagster.services.incoming import KeepInStaging, KindHooks, Staging, fail
from librarian_dagster.services.integrity_repair import record_repair, repair_wanted
from librarian_dagster.services.sneaker_return import SneakerHooks
from librarian_dagster.services.uploads import UploadHooks
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import FINAL_STATUSES, Severity, TransferKind, TransferStatus
from librarian_dagster.storage.checksums import (
    DEFAULT_ALGORITHM,
    Checksum,
    ChecksumError,
    hash_path,
    is_empty_directory,
)
from librarian_dagster.storage.errors import AlreadyStoredError, StagingNotFoundError, StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.quarantine import put_back, remove_set_aside, set_aside
from librarian_dagster.storage.sidecars import (
    Sidecar,
    SidecarError,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from librarian_dagster.storage.tree import tree_size

# After this many claims a transfer that keeps crashing its runs is failed for good.
MAX_ATTEMPTS = 5

RunIsActive = Callable[[str], bool]


def kind_hooks(settings: LibrarianSettings) -> dict[TransferKind, KindHooks]:
    """The hooks of every kind that has its own (the others get ``KeepInStaging``)."""
    return {
        TransferKind.UPLOAD: UploadHooks(),
        TransferKind.INBOX: InboxHooks(settings),
        TransferKind.CLONE: CloneHooks(),
        TransferKind.SNEAKER: SneakerHooks(),
    }


@dataclass(frozen=True)
class IngestOutcome:
    transfer_id: int
    name: str
    status: Literal["stored", "failed", "skipped"]
    reason: str | None = None
    size: int = 0
    checksum: str | None = None
    store: str | None = None
    path: str | None = None
    seconds: float = 0.0

    @property
    def mb_per_second(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ClaimedTransfer:
    """What an attempt needs to know, read in the claiming transaction."""

    transfer_id: int
    kind: TransferKind
    name: str
    size: int
    checksum: Checksum | None
    store_id: int
    store_name: str
    staging_id: str
    staging_path: Path
    uploader: str
    source: str
    # Claimed only to be failed: its runs kept crashing (MAX_ATTEMPTS).
    gave_up: bool = False
    # A good copy re-sent by a peer for a book catalogued here with the same checksum:
    # it replaces the bad copy (``services.integrity_repair``).
    repair: bool = False


class VerificationFailed(Exception):
    """The bytes are not what was promised; the reason goes to the uploader."""


def claim(
    catalogue: Catalogue, transfer_id: int, run_id: str, run_is_active: RunIsActive
) -> ClaimedTransfer | IngestOutcome:
    """Take a staged transfer for this run, or say why not (an IngestOutcome 'skipped')."""
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        if transfer is None:
            return IngestOutcome(transfer_id, "?", "skipped", "no such transfer")
        name = transfer.name
        if transfer.status in FINAL_STATUSES:
            return IngestOutcome(transfer_id, name, "skipped", f"already {transfer.status.value}")
        if transfer.status == TransferStatus.INITIATED:
            return IngestOutcome(transfer_id, name, "skipped", "not committed yet")
        if (
            transfer.status == TransferStatus.VERIFYING
            and transfer.run_id not in (None, run_id)
            and run_is_active(transfer.run_id)
        ):
            return IngestOutcome(transfer_id, name, "skipped", f"run {transfer.run_id} has it")
        gave_up = transfer.attempts >= MAX_ATTEMPTS
        transfer.status = TransferStatus.VERIFYING
        transfer.run_id = run_id
        if not gave_up:
            transfer.attempts += 1
        try:
            expected = Checksum.parse(transfer.checksum) if transfer.checksum else None
        except ChecksumError:
            expected = None  # validated at commit; an inbox marker may be free text
        repair = repair_wanted(session, transfer, expected)
        return ClaimedTransfer(
            transfer_id=transfer.id,
            kind=transfer.kind,
            name=name,
            size=transfer.size,
            checksum=expected,
            store_id=transfer.store_id,
            store_name=transfer.store.name,
            staging_id=transfer.staging_id,
            staging_path=Path(transfer.staging_path),
            uploader=transfer.uploader,
            source=transfer.source,
            gave_up=gave_up,
            repair=repair,
        )


def _verify(path: Path, claimed: ClaimedTransfer) -> Checksum:
    """One streaming read: the checksum of ``path``, checked against what was promised."""
    size = tree_size(path)
    if size != claimed.size:
        raise VerificationFailed(f"size mismatch: declared {claimed.size} bytes, found {size}")
    if size == 0 and is_empty_directory(path):  # uploads are refused at commit; not clones
        raise VerificationFailed("an empty directory is not a book")
    algorithm = claimed.checksum.algorithm if claimed.checksum else DEFAULT_ALGORITHM
    try:
        actual = hash_path(path, algorithm)
    except ChecksumError as error:  # symlinks, devices, ... inside the book
        raise VerificationFailed(str(error)) from None
    if claimed.checksum is not None and actual != claimed.checksum:
        raise VerificationFailed(f"checksum mismatch: expected {claimed.checksum}, got {actual}")
    return actual


def _place(store: LocalStore, claimed: ClaimedTransfer) -> tuple[Path, Checksum, Path | None]:
    """Verify and move into the store, or recognise that a previous attempt already did.

    A repair sets the bad copy aside (returned, for removal once recorded) only after the
    new bytes verified.
    """
    if os.path.lexists(claimed.staging_path):
        checksum = _verify(claimed.staging_path, claimed)
        staged = store.staged(claimed.staging_id, claimed.name)
        set_aside_copy = None
        try:
            if claimed.repair:
                directory = os.path.isdir(claimed.staging_path)
                set_aside_copy = set_aside(store, claimed.name, directory)
            try:
                return store.commit(staged, claimed.name), checksum, set_aside_copy
            except BaseException:
                if set_aside_copy is not None:  # the bad copy goes back where it was
                    put_back(store, claimed.name, set_aside_copy)
                raise
        except StagingNotFoundError:
            pass  # moved away meanwhile (by a run that took over): look in the store below
        except AlreadyStoredError:
            raise VerificationFailed(
                f"{claimed.name!r} already exists in store {store.name!r} but not in the catalogue"
            ) from None
        except PermissionError as error:
            # Sealing (chmod) needs the librarian to own the staged files: a shared-filesystem
            # copy made by another user cannot be made read-only by us.
            raise VerificationFailed(
                f"cannot make the staged data read-only ({error.strerror}: {error.filename}); "
                "copy into staging as the librarian's user, or upload over HTTP"
            ) from None
    stored = store.path_for(claimed.name)
    if os.path.lexists(stored):
        # A previous attempt renamed it and died before recording it: the stored copy is
        # read-only and was verified before the rename; verify again before we vouch for it.
        return stored, _verify(stored, claimed), None
    raise VerificationFailed(f"the staged data is missing ({claimed.staging_path})")


def _still_claimed(
    session: Session, claimed: ClaimedTransfer, run_id: str
) -> IncomingTransfer | None:
    """The transfer, locked, if this run still holds its claim (else another run took over)."""
    transfer = session.get(IncomingTransfer, claimed.transfer_id, with_for_update=True)
    if transfer is None or transfer.status != TransferStatus.VERIFYING or transfer.run_id != run_id:
        return None
    return transfer


def _record(
    catalogue: Catalogue,
    claimed: ClaimedTransfer,
    run_id: str,
    path: Path,
    checksum: Checksum,
    hooks: KindHooks,
    created: datetime,
) -> bool | None:
    """File + Instance + transfer stored (+ the kind's hook), in one transaction.

    None if the claim was lost. A repair: whether a record was closed by it (if not, an
    operator dismissed it meanwhile, and the set-aside copy is kept).
    """
    with catalogue.session() as session:
        transfer = _still_claimed(session, claimed, run_id)
        if transfer is None:
            return None
        if claimed.repair:
            return record_repair(session, transfer, claimed.store_id, str(path), hooks)
        file = File(
            name=claimed.name,
            size=claimed.size,
            checksum=str(claimed.checksum or checksum),
            is_directory=path.is_dir(),
            uploader=claimed.uploader,
            source=claimed.source,
            created_at=created,
        )
        session.add(file)
        session.flush()
        now = created
        session.add(
            Instance(file_id=file.id, store_id=claimed.store_id, path=str(path), verified_at=now)
        )
        transfer.status = TransferStatus.STORED
        transfer.completed_at = now
        transfer.checksum = file.checksum
        hooks.on_stored(session, transfer, file)
        return True


def _sidecar(
    store: LocalStore, claimed: ClaimedTransfer, path: Path, checksum: str, created: datetime
) -> None:
    """The book's sidecar (``storage.sidecars``), before the commit that records it; a
    repaired copy keeps the one its book already has."""
    if claimed.repair:
        with contextlib.suppress(SidecarError):
            if read_sidecar(sidecar_path(store, claimed.name)).checksum == checksum:
                return
    sidecar = Sidecar(
        name=claimed.name,
        checksum=checksum,
        size=claimed.size,
        is_directory=path.is_dir(),
        created=created,
        uploader=claimed.uploader,
        source=claimed.source,
    )
    write_sidecar(store, sidecar)


def _fail(
    catalogue: Catalogue,
    claimed: ClaimedTransfer,
    run_id: str,
    reason: str,
    staging: Staging,
    hooks: KindHooks,
) -> bool:
    """Transfer failed + event + the kind's hook, in one transaction. False if not ours.

    What the hook leaves for later runs once that transaction has committed.
    """
    severity = Severity.ERROR if claimed.gave_up else Severity.WARNING
    kind = "ingest_gave_up" if claimed.gave_up else "ingest_failed"
    with catalogue.session() as session:
        transfer = _still_claimed(session, claimed, run_id)
        if transfer is None:
            return False
        fail(transfer, reason)
        record_event(
            session,
            severity,
            kind,
            reason,
            subject=claimed.name,
            details={"transfer_id": claimed.transfer_id, "kind": claimed.kind.value},
        )
        after_commit = hooks.on_failed(session, transfer, staging, reason)
    if after_commit is not None:
        after_commit(catalogue)
    return True


def ingest_transfer(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    transfer_id: int,
    *,
    run_id: str,
    run_is_active: RunIsActive,
    settings: LibrarianSettings,
) -> IngestOutcome:
    """Ingest one staged transfer. Unexpected errors propagate, leaving it for a retry."""
    started = time.monotonic()
    claimed = claim(catalogue, transfer_id, run_id, run_is_active)
    if isinstance(claimed, IngestOutcome):
        return claimed
    store = stores[claimed.store_name]
    hooks = kind_hooks(settings).get(claimed.kind, KeepInStaging())
    staging = Staging(store, claimed.staging_id, claimed.staging_path)
    try:
        if claimed.gave_up:
            raise VerificationFailed(f"gave up after {MAX_ATTEMPTS} attempts; see the run logs")
        path, checksum, set_aside_copy = _place(store, claimed)
    except (VerificationFailed, StoreError) as error:
        reason = str(error)
        _fail(catalogue, claimed, run_id, reason, staging, hooks)
        return IngestOutcome(transfer_id, claimed.name, "failed", reason, store=store.name)
    created = datetime.now(UTC)
    _sidecar(store, claimed, path, str(claimed.checksum or checksum), created)
    recorded = _record(catalogue, claimed, run_id, path, checksum, hooks, created)
    if recorded is None:
        return IngestOutcome(transfer_id, claimed.name, "skipped", "another run took it over")
    if set_aside_copy is not None and recorded:  # the bad copy, replaced and recorded so
        remove_set_aside(set_aside_copy)
    return IngestOutcome(
        transfer_id,
        claimed.name,
        "stored",
        size=claimed.size,
        checksum=str(claimed.checksum or checksum),
        store=store.name,
        path=str(path),
        seconds=time.monotonic() - started,
    )
