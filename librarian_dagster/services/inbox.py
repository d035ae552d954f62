"""Drop-folder ingest: finished books in a store's ``inbox`` become staged transfers.

An observatory's data producer writes books into a directory on the store's filesystem. A
book is the entry ``inbox_depth`` segments below the inbox (its catalogue name is that
relative path); it is finished when ``<book>.done`` appears beside it (the marker may contain
the producer's checksum, which ingest then verifies) or, with ``inbox_quiet_seconds``, when
nothing in it changed for that long. Half-written books are never touched.

Registering a book is three steps, each repaired by the next scan if interrupted:
1. an ``inbox`` transfer is recorded as ``initiated`` with a fresh staging directory;
2. the book is renamed from the inbox into that staging directory (same filesystem);
3. the transfer becomes ``staged`` and the marker is removed.
From there it is ingested like an upload. If verification fails, the book is renamed back
into the inbox and its marker becomes ``<book>.failed`` holding the reason: the producer's
data is never deleted, and it is not picked up again until someone writes a new ``.done``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    PENDING_STATUSES,
    File,
    IncomingTransfer,
    Severity,
    Store,
    TransferKind,
    TransferStatus,
)
from librarian_dagster.services.events import record_event
from librarian_dagster.services.uploads import fail_transfer, staged_size
from librarian_dagster.settings import LibrarianSettings, StoreSettings
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.names import InvalidNameError, validate_name

DONE = ".done"
FAILED = ".failed"
INBOX_UPLOADER = "inbox"
# A scan never looks at more candidates than this (the rest wait for the next tick).
MAX_CANDIDATES = 10_000


def _candidates(inbox: Path, depth: int) -> Iterator[tuple[str, Path]]:
    """(name, path) of every entry exactly ``depth`` segments below the inbox."""
    level: list[tuple[str, Path]] = [("", inbox)]
    for current in range(depth):
        deeper: list[tuple[str, Path]] = []
        for prefix, directory in level:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.endswith((DONE, FAILED)) or entry.name.startswith("."):
                    continue
                name = f"{prefix}{entry.name}"
                if current == depth - 1:
                    deeper.append((name, Path(entry.path)))
                elif entry.is_dir(follow_symlinks=False):
                    deeper.append((f"{name}/", Path(entry.path)))
        level = deeper
    yield from level[:MAX_CANDIDATES]


def _newest_mtime(path: Path) -> float:
    newest = os.lstat(path).st_mtime
    if path.is_dir() and not path.is_symlink():
        for directory, dirnames, filenames in os.walk(path):
            for entry in (*dirnames, *filenames):
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(directory, entry)).st_mtime)
    return newest


def _finished(path: Path, config: StoreSettings) -> bool:
    if path.with_name(path.name + DONE).is_file():
        return True
    quiet = config.inbox_quiet_seconds
    return quiet is not None and time.time() - _newest_mtime(path) > quiet


def _write_failed_marker(book: Path, reason: str) -> None:
    marker = book.with_name(book.name + FAILED)
    marker.write_text(reason + "\n")
    with contextlib.suppress(FileNotFoundError):
        book.with_name(book.name + DONE).unlink()


def _marker_checksum(book: Path) -> str | None:
    """The checksum in ``<book>.done`` (None when the marker is empty or absent)."""
    try:
        text = book.with_name(book.name + DONE).read_text().strip()
    except FileNotFoundError:
        return None
    return str(Checksum.parse(text)) if text else None


def _register(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    config: StoreSettings,
    store: LocalStore,
    name: str,
    book: Path,
) -> str | None:
    """Steps 1 to 3 for one finished book; returns a line for the log, or None if not ours now."""
    try:
        name = validate_name(name)
        checksum = _marker_checksum(book)
    except (InvalidNameError, ChecksumError) as error:
        _write_failed_marker(book, f"refused: {error}")
        return f"inbox {name}: refused ({error})"
    with catalogue.session() as session:
        if session.scalar(select(File.id).where(File.name == name)) is not None:
            reason = f"{name!r} is already catalogued; names are immutable"
            _write_failed_marker(book, reason)
            record_event(session, Severity.WARNING, "inbox_refused", reason, subject=name)
            return f"inbox {name}: {reason}"
        if session.scalar(
            select(IncomingTransfer.id).where(
                IncomingTransfer.name == name, IncomingTransfer.status.in_(PENDING_STATUSES)
            )
        ):
            return None  # being handled (an upload of that name, or a registration to repair)
        store_row = session.scalar(select(Store).where(Store.name == config.name))
        if store_row is None:
            return None
        size = staged_size(book) or 0
        try:
            staged = store.stage(name, size)
        except StoreError as error:
            record_event(session, Severity.ERROR, "inbox_stage_failed", str(error), subject=name)
            return f"inbox {name}: cannot stage ({error})"
        transfer = IncomingTransfer(
            kind=TransferKind.INBOX,
            status=TransferStatus.INITIATED,
            name=name,
            size=size,
            checksum=checksum,
            uploader=INBOX_UPLOADER,
            source=settings.name,
            store_id=store_row.id,
            staging_id=staged.staging_id,
            staging_path=str(staged.data_path),
        )
        session.add(transfer)
        session.flush()
        transfer_id = transfer.id
    return _move_in(catalogue, transfer_id, book)


def _move_in(catalogue: Catalogue, transfer_id: int, book: Path) -> str:
    """Steps 2 and 3: rename the book into staging, mark the transfer staged, drop the marker."""
    with catalogue.session() as session:
        transfer = session.get(IncomingTransfer, transfer_id, with_for_update=True)
        assert transfer is not None
        data_path = Path(transfer.staging_path)
        if not os.path.lexists(data_path):
            if not os.path.lexists(book):
                fail_transfer(transfer, "the inbox book vanished before it was staged")
                return f"inbox {transfer.name}: vanished"
            os.rename(book, data_path)
        transfer.size = staged_size(data_path) or 0
        transfer.status = TransferStatus.STAGED
        name = transfer.name
    with contextlib.suppress(FileNotFoundError):
        book.with_name(book.name + DONE).unlink()
    return f"inbox {name}: staged"


def _repair(catalogue: Catalogue, settings: LibrarianSettings) -> list[str]:
    """Finish registrations interrupted between steps 1 and 3."""
    with catalogue.session() as session:
        rows = session.execute(
            select(IncomingTransfer.id, IncomingTransfer.name, Store.name.label("store"))
            .join(Store, Store.id == IncomingTransfer.store_id)
            .where(
                IncomingTransfer.kind == TransferKind.INBOX,
                IncomingTransfer.status == TransferStatus.INITIATED,
            )
            .limit(MAX_CANDIDATES)
        ).all()
    lines = []
    for row in rows:
        config = settings.store(row.store)
        if config.inbox is None:
            continue
        lines.append(_move_in(catalogue, row.id, config.inbox / row.name))
    return lines


def scan_inboxes(catalogue: Catalogue, settings: LibrarianSettings) -> list[str]:
    """One pass over every store's inbox; returns log lines of what it did."""
    from librarian_dagster.services.stores import open_store

    lines = _repair(catalogue, settings)
    for config in settings.stores:
        if config.inbox is None or not config.enabled:
            continue
        store = open_store(config)
        for name, book in _candidates(config.inbox, config.inbox_depth):
            if not _finished(book, config):
                continue
            line = _register(catalogue, settings, config, store, name, book)
            if line:
                lines.append(line)
    return lines


def return_to_inbox(
    settings: LibrarianSettings, store_name: str, name: str, data: Path, reason: str
) -> None:
    """Hand a book that failed verification back to the producer, with the reason."""
    inbox = settings.store(store_name).inbox
    if inbox is None or not os.path.lexists(data):
        return
    book = inbox / name
    book.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(book):
        return  # the producer wrote a new one meanwhile; keep ours in staging for a human
    os.rename(data, book)
    _write_failed_marker(book, reason)
