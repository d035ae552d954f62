"""Drop-folder ingest: finished books in a store's ``inbox`` become staged transfers.

An observatory's data producer writes books into a directory on the store's filesystem. A
book is the entry ``inbox_depth`` segments below the inbox (its catalogue name is that
relative path); it is finished when ``<book>.done`` appears beside it (the marker may contain
the producer's checksum, which ingest then verifies) or, with ``inbox_quiet_seconds``, when
nothing in it changed for that long. Half-written books are never touched.

The work is split as sensors and runs split it. ``find_books`` is the sensor's part: it
lists entries and markers, bounded, and walks into no book and moves nothing (with a quiet
period it looks at the book's own mtime only). ``register_books`` is the run's part: it
checks each book again (walking it for the quiet period), then registers it in three steps,
each repaired by the next registration if interrupted:

1. an ``inbox`` transfer is recorded as ``initiated`` with a fresh staging directory;
2. the book is renamed from the inbox into that staging directory (same filesystem);
3. the transfer becomes ``staged`` and the marker is removed.

From there it is ingested like an upload, in the same run. If verification fails, the book
is renamed back into the inbox and its marker becomes ``<book>.failed`` holding the reason
(``InboxHooks``); it is not picked up again until someone writes a new ``.done``. If it
cannot go back (the producer wrote a new book of that name meanwhile, or the store has no
inbox any more), it stays in staging and an event says where: the producer's data is never
deleted. An empty directory (no file in it or below it) is refused like a bad name: it stays
in the inbox beside a ``.failed`` marker saying so.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Store
from librarian_dagster.services.events import record_event
from librarian_dagster.services.files import is_catalogued
from librarian_dagster.services.incoming import (
    AfterCommit,
    Staging,
    fail,
    keep_in_staging,
    pending_for_name,
    stage_transfer,
)
from librarian_dagster.services.ingest_requests import StagedItem
from librarian_dagster.services.stores import open_store
from librarian_dagster.settings import LibrarianSettings, StoreSettings
from librarian_dagster.states import PENDING_STATUSES, Severity, TransferKind, TransferStatus
from librarian_dagster.storage.checksums import Checksum, ChecksumError, refuse_empty_directory
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.names import InvalidNameError, validate_new_name
from librarian_dagster.storage.posix import rename_noreplace
from librarian_dagster.storage.tree import newest_mtime_and_size, scandir_sorted, tree_size

DONE = ".done"
FAILED = ".failed"
INBOX_UPLOADER = "inbox"
# A sensor tick never lists more candidates than this (the rest wait for the next tick).
MAX_CANDIDATES = 10_000


@dataclass(frozen=True, order=True)
class InboxBook:
    """A book found in a store's inbox: the store and the book's path below the inbox."""

    store: str
    name: str


def _entries(inbox: Path, depth: int) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(name, entry) of everything exactly ``depth`` segments below the inbox, in order."""
    level: list[tuple[str, Path]] = [("", inbox)]
    for current in range(depth):
        deeper: list[tuple[str, Path]] = []
        for prefix, directory in level:
            try:
                entries = scandir_sorted(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.endswith((DONE, FAILED)) or entry.name.startswith("."):
                    continue
                name = f"{prefix}{entry.name}"
                if current == depth - 1:
                    yield name, entry
                elif entry.is_dir(follow_symlinks=False):
                    deeper.append((f"{name}/", Path(entry.path)))
        level = deeper


def _marker(book: Path, suffix: str) -> Path:
    return book.with_name(book.name + suffix)


def _finished(book: Path, config: StoreSettings, *, walk: bool) -> bool:
    """A ``.done`` marker, or (quiet period) no change for that long.

    A book that failed (``.failed``) waits for a new ``.done``. Without ``walk`` only the
    book's own mtime is looked at: what a sensor may afford; the run walks the whole book.
    """
    if _marker(book, DONE).is_file():
        return True
    quiet = config.inbox_quiet_seconds
    if quiet is None or _marker(book, FAILED).exists():
        return False
    newest = newest_mtime_and_size(book)[0] if walk else os.lstat(book).st_mtime
    return time.time() - newest > quiet


def find_books(settings: LibrarianSettings, limit: int = MAX_CANDIDATES) -> list[InboxBook]:
    """Books in the enabled stores' inboxes that look finished, at most ``limit``."""
    found: list[InboxBook] = []
    for config in settings.stores:
        if config.inbox is None or not config.enabled:
            continue
        for name, entry in _entries(config.inbox, config.inbox_depth):
            if len(found) >= limit:
                return found
            with contextlib.suppress(FileNotFoundError):  # taken away while we looked
                if _finished(Path(entry.path), config, walk=False):
                    found.append(InboxBook(config.name, name))
    return found


def not_pending(catalogue: Catalogue, books: Sequence[InboxBook]) -> list[InboxBook]:
    """The books whose name no transfer is handling now (an upload, a registration)."""
    if not books:
        return []
    with catalogue.session() as session:
        busy = set(
            session.scalars(
                select(IncomingTransfer.name).where(
                    IncomingTransfer.name.in_([book.name for book in books]),
                    IncomingTransfer.status.in_(PENDING_STATUSES),
                )
            )
        )
    return [book for book in books if book.name not in busy]


def has_interrupted(catalogue: Catalogue) -> bool:
    """Whether a registration was interrupted between its steps 1 and 3."""
    with catalogue.session() as session:
        return session.scalar(_interrupted().limit(1)) is not None


def _interrupted() -> Select[tuple[int]]:
    return select(IncomingTransfer.id).where(
        IncomingTransfer.kind == TransferKind.INBOX,
        IncomingTransfer.status == TransferStatus.INITIATED,
    )


def _write_failed_marker(book: Path, reason: str) -> None:
    _marker(book, FAILED).write_text(reason + "\n")
    with contextlib.suppress(FileNotFoundError):
        _marker(book, DONE).unlink()


def _marker_checksum(book: Path) -> str | None:
    """The checksum in ``<book>.done`` (None when the marker is empty or absent)."""
    try:
        text = _marker(book, DONE).read_text().strip()
    except FileNotFoundError:
        return None
    return str(Checksum.parse(text)) if text else None


@dataclass
class Registered:
    """What a registration pass did: transfers now staged, and lines for the run's log."""

    staged: list[StagedItem]
    lines: list[str]


def _register(
    catalogue: Catalogue, settings: LibrarianSettings, config: StoreSettings, name: str
) -> tuple[StagedItem | None, str | None]:
    """Steps 1 to 3 for one book; (the staged transfer, log line), or Nones if not ours now."""
    assert config.inbox is not None
    book = config.inbox / name
    try:
        if not os.path.lexists(book) or not _finished(book, config, walk=True):
            return None, None
    except FileNotFoundError:
        return None, None  # taken away while we looked
    try:
        name = validate_new_name(name)
        checksum = _marker_checksum(book)
        refuse_empty_directory(book, repr(name))  # EmptyBookError: a ChecksumError
    except (InvalidNameError, ChecksumError) as error:
        _write_failed_marker(book, f"refused: {error}")
        return None, f"inbox {name}: refused ({error})"
    store = open_store(config)
    try:
        transfer_id, line = _record(catalogue, settings, config, store, name, book, checksum)
    except IntegrityError:
        return None, None  # another registration of this name got there first
    if transfer_id is None:
        return None, line
    return _move_in(catalogue, transfer_id, book)


def _record(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    config: StoreSettings,
    store: LocalStore,
    name: str,
    book: Path,
    checksum: str | None,
) -> tuple[int | None, str | None]:
    """Step 1: the ``initiated`` transfer and its staging directory, or why not."""
    with catalogue.session() as session:
        if is_catalogued(session, name):
            if not os.path.lexists(book):
                return None, None  # another run just registered and stored it
            reason = f"{name!r} is already catalogued; names are immutable"
            _write_failed_marker(book, reason)
            record_event(session, Severity.WARNING, "inbox_refused", reason, subject=name)
            return None, f"inbox {name}: {reason}"
        if pending_for_name(session, name) is not None:
            return None, None  # being handled (an upload of that name, or a registration)
        store_row = session.scalar(select(Store).where(Store.name == config.name))
        if store_row is None:
            return None, None
        try:
            transfer = stage_transfer(
                session,
                store_row,
                store,
                kind=TransferKind.INBOX,
                name=name,
                size=tree_size(book) or 0,
                checksum=checksum,
                uploader=INBOX_UPLOADER,
                source=settings.name,
            )
        except StoreError as error:
            record_event(session, Severity.ERROR, "inbox_stage_failed", str(error), subject=name)
            return None, f"inbox {name}: cannot stage ({error})"
        return transfer.id, None


def _move_in(
    catalogue: Catalogue, transfer_id: int, book: Path | None
) -> tuple[StagedItem | None, str | None]:
    """Steps 2 and 3: rename the book into staging, mark the transfer staged, drop the marker.

    Only for a transfer still ``initiated``: another registration (an overlapping run) may
    have finished it since it was read, and then this does nothing. ``book`` None: the store
    has no inbox any more, so only a book already in staging can be taken on. The transfer
    is marked as requested (``launched_at``): the run doing this ingests it.
    """
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        if transfer is None or transfer.status != TransferStatus.INITIATED:
            return None, None
        name = transfer.name
        data_path = Path(transfer.staging_path)
        if not os.path.lexists(data_path):
            if book is None or not os.path.lexists(book):
                reason = (
                    "the inbox book vanished before it was staged"
                    if book is not None
                    else "its store has no inbox any more; the book was not moved"
                )
                fail(transfer, reason)
                record_event(session, Severity.WARNING, "inbox_not_staged", reason, subject=name)
                return None, f"inbox {name}: not staged ({reason})"
            os.rename(book, data_path)
        transfer.size = tree_size(data_path) or 0
        transfer.status = TransferStatus.STAGED
        transfer.launched_at = datetime.now(UTC)
        staged = StagedItem(transfer_id, name, transfer.size)
    if book is not None:
        with contextlib.suppress(FileNotFoundError):
            _marker(book, DONE).unlink()
    return staged, f"inbox {name}: staged"


def _inbox_of(settings: LibrarianSettings, store: str) -> Path | None:
    try:
        return settings.store(store).inbox
    except KeyError:  # the store is no longer configured
        return None


def _repair(catalogue: Catalogue, settings: LibrarianSettings) -> Registered:
    """Finish registrations interrupted between steps 1 and 3 (or end them, saying why)."""
    with catalogue.session() as session:
        rows = session.execute(
            _interrupted()
            .add_columns(IncomingTransfer.name, Store.name.label("store"))
            .join(Store, Store.id == IncomingTransfer.store_id)
            .limit(MAX_CANDIDATES)
        ).all()
    done = Registered([], [])
    for row in rows:
        inbox = _inbox_of(settings, row.store)
        staged, line = _move_in(catalogue, row.id, inbox / row.name if inbox else None)
        if line:
            done.lines.append(line)
        if staged is not None:
            done.staged.append(staged)
    return done


def register_books(
    catalogue: Catalogue, settings: LibrarianSettings, books: Sequence[InboxBook]
) -> Registered:
    """Finish interrupted registrations, then register each of ``books`` that is finished."""
    done = _repair(catalogue, settings)
    for book in books:
        try:
            config = settings.store(book.store)
        except KeyError:
            continue  # no longer configured
        if config.inbox is None or not config.enabled:
            continue
        staged, line = _register(catalogue, settings, config, book.name)
        if line:
            done.lines.append(line)
        if staged is not None:
            done.staged.append(staged)
    return done


class InboxHooks:
    """What ingest does at the end of an inbox book (``services.ingest.KindHooks``).

    A refused book goes back to its producer, beside a ``.failed`` marker with the reason;
    if it cannot (a new book of that name is there, or the inbox is gone), it stays in
    staging and an event says where. Never deleted: the inbox copy may be the only one.
    """

    def __init__(self, settings: LibrarianSettings) -> None:
        self._settings = settings

    def on_stored(self, session: Session, transfer: IncomingTransfer, file: File) -> None:
        """Nothing more to do: the marker went when the book was staged."""

    def on_failed(
        self, session: Session, transfer: IncomingTransfer, staging: Staging, reason: str
    ) -> AfterCommit | None:
        """Hand the book back now, in the transaction: a rename, quick and not repeated.

        If the transaction then fails to commit, the book is already back with its marker
        and the next attempt finds nothing in staging to hand back: nothing is lost.
        """
        if not os.path.lexists(staging.data_path):
            return None  # handed back by an earlier attempt, or gone: nothing of ours to move
        inbox = _inbox_of(self._settings, staging.store.name)
        if inbox is None:
            why = "the store has no inbox any more"
            keep_in_staging(session, transfer, staging, reason, why)
            return None
        book = inbox / transfer.name
        book.parent.mkdir(parents=True, exist_ok=True)
        try:
            rename_noreplace(staging.data_path, book)
        except FileExistsError:
            why = "a new book of that name is in the inbox"
            keep_in_staging(session, transfer, staging, reason, why)
            return None
        _write_failed_marker(book, reason)
        staging.store.release_staging(staging.staging_id)
        return None
