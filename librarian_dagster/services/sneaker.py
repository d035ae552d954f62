"""SneakerNet at the source: fill a drive with the books it should carry.

``fill_drive`` copies the books a sneaker store's drive lacks onto it, in catalogue order
(oldest first), and records each as an instance on that store only once its bytes were
read with the catalogue's checksum. Which books those are, and whether the drive may be
filled at all, is ``services.sneaker_plan``'s: not those that already travel another way
(on another drive going the same way, or at the store's ``destination`` peer). It stops at
the first book that does not fit (``capacity_bytes`` and the disk, the reserve kept either
way); the drive is then ``full`` and the caller alerts. A book larger than the drive could
ever take, empty, is passed over (it goes by network), not waited for.

Safe to kill at any moment and to run again:

- only one fill writes to a drive at a time (``storage.sneaker.drive_lock``, dropped by the
  kernel when its holder dies), and whoever holds the lock removes what a dead fill left in
  the drive's staging area;
- a book is copied into staging, verified, renamed into the store area, then recorded: a
  fill that died after the rename leaves a book the next one finds, re-reads and records
  (or removes, if its bytes are not the book's);
- the drive is checked (mounted, this store's identity, the drive its copies are on) at
  the start of every fill, never trusted from an earlier look.

How far fills have looked is the store's ``fill_high_water_file_id``: every book up to it
is on the drive or travels another way. Books that could not be carried this time (no copy
in service here, a copy that did not verify) hold the mark below them, so the next fill
looks at them again. A wipe sets it back to 0. The sensor compares it with the newest book
(``sneaker_plan.fills_due``), so finding work never reads the catalogue's books.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Instance, Store
from librarian_dagster.services.events import record_event
from librarian_dagster.services.integrity import verify_instances
from librarian_dagster.services.sneaker_plan import (  # DriveRefused: raised from here too
    Book,
    DriveFill,
    DriveRefused,
    candidates,
    fill_mark,
    open_fill,
    save_fill_mark,
    sneaker_config,
    sources,
)
from librarian_dagster.services.stores import drive_bytes, drive_limit, drive_room, open_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState, Severity
from librarian_dagster.storage.checksums import Checksum, ChecksumError, hash_path
from librarian_dagster.storage.errors import StoreError, StoreFullError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.copy import SourceChangedError, copy_and_hash
from librarian_dagster.storage.sneaker import drive_lock

# Books read from the catalogue at a time; the mark is saved after each page.
PAGE = 256
# A fill reports its progress at most this often (seconds).
PROGRESS_EVERY = 15.0
BYTES_PROGRESS_EVERY = 300.0
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass
class FillReport:
    """What one fill did. ``held`` books stay for a later fill; ``refused`` ones failed it."""

    store: str
    drive_uuid: str
    copied: list[str] = field(default_factory=list)
    # Found on the drive from a fill that died before recording them, re-read and recorded.
    adopted: list[str] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    books_on_drive: int = 0
    bytes_on_drive: int = 0
    free_bytes: int = 0
    did_not_fit: str | None = None
    # Books larger than the drive can ever take, empty (name, size): they go by network.
    too_big: list[tuple[str, int]] = field(default_factory=list)
    leftovers_removed: int = 0

    @property
    def full(self) -> bool:
        return self.did_not_fit is not None

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        parts = [f"{len(self.copied)} books copied ({self.bytes} bytes)"]
        if self.adopted:
            parts.append(f"{len(self.adopted)} found from an interrupted fill")
        if self.held:
            parts.append(f"{len(self.held)} left for later")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        if self.too_big:
            parts.append(f"{len(self.too_big)} larger than the drive, left out")
        if self.full:
            parts.append(f"full: {self.did_not_fit} does not fit")
        return f"drive {self.store}: " + ", ".join(parts)


class _Held(Exception):
    """This book cannot be carried now; a later fill looks at it again."""


class _Refused(Exception):
    """This book was refused (its copy here did not verify); the fill ends failed."""


class _Full(Exception):
    """The drive has no room for this book."""


class _TooBig(Exception):
    """The drive could not take this book even empty: it is passed over, not waited for."""


def fill_drive(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    store_name: str,
    *,
    on_full: Callable[[FillReport], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> FillReport:
    """Copy onto ``store_name``'s drive what it should carry; see the module docstring.

    ``on_full`` is called once the drive is found full and before it is marked so: a fill
    killed in between finds it full again and calls it again (an alert twice, never none).
    """
    started = time.monotonic()
    config = sneaker_config(settings, store_name)
    store = open_store(config)
    with catalogue.session() as session:
        open_fill(session, settings, config, store)  # before anything is written to it
    try:
        store.ensure_layout()
    except (OSError, StoreError) as error:
        raise DriveRefused(f"store {store_name!r}: {error}") from None
    with drive_lock(store.staging_dir, store_name):
        with catalogue.session() as session:
            drive = open_fill(session, settings, config, store)  # again, now that it is ours
            after = fill_mark(session, drive.store_id)
        drive.limit = drive_limit(store, config)
        report = FillReport(store_name, drive.drive_uuid)
        report.leftovers_removed = _remove_leftovers(store)
        held_below = drive.upto + 1  # the lowest book a later fill must look at again
        progress = _Progress(log, report)
        while True:
            with catalogue.session() as session:
                page = candidates(session, drive, after, PAGE)
                found = sources(session, settings, [book.id for book in page])
            if not page:
                break
            for book in page:
                try:
                    _carry(catalogue, drive, book, found.get(book.id), report, progress)
                except _Held as held:
                    report.held.append((book.name, str(held)))
                    held_below = min(held_below, book.id)
                except _Refused as refused:
                    report.refused.append((book.name, str(refused)))
                    held_below = min(held_below, book.id)
                except _TooBig:
                    report.too_big.append((book.name, book.size))
                except _Full:
                    report.did_not_fit = book.name
                    held_below = min(held_below, book.id)
                    break
                progress.book_done()
            if report.full:
                break
            after = page[-1].id
            save_fill_mark(catalogue, drive.store_id, min(after, held_below - 1))
        _finish(catalogue, drive, report, held_below, on_full, started)
    return report


def _remove_leftovers(store: LocalStore) -> int:
    """Remove what dead fills left in the drive's staging area (the caller holds the lock;
    nothing but fills writes there). Entries that are not staging directories stay."""
    removed = 0
    for leftover in store.leftover_staging(older_than_seconds=-1):
        store.discard_staging(leftover.staging_id)
        removed += 1
    return removed


def _carry(
    catalogue: Catalogue,
    drive: DriveFill,
    book: Book,
    source: LocalStore | None,
    report: FillReport,
    progress: _Progress | None = None,
) -> None:
    """Put one book on the drive and record it, or raise why not."""
    store = drive.store
    expected = Checksum.parse(book.checksum)
    if os.path.lexists(store.path_for(book.name)) and _adopt(store, book, expected):
        _record(catalogue, drive, book, store.path_for(book.name))
        report.adopted.append(book.name)
        drive.used += book.size
        return
    if book.size > drive.limit:
        raise _TooBig
    room = drive_room(store, drive.config, drive.used)
    if book.size > room:
        raise _Full
    if source is None:
        raise _Held("no copy of it is in service in a local store here")
    try:
        staged = store.stage(book.name, book.size)
    except StoreFullError:
        raise _Full from None
    try:
        found = copy_and_hash(
            source.path_for(book.name),
            staged.data_path,
            expected.algorithm,
            progress.copying(book.name, book.size) if progress is not None else None,
        )
    except FileNotFoundError as error:
        store.discard_staging(staged.staging_id)
        raise _Held(f"its copy in store {source.name!r} is gone: {error.strerror}") from None
    except (SourceChangedError, ChecksumError) as error:
        store.discard_staging(staged.staging_id)
        raise _Refused(f"its copy in store {source.name!r} cannot be copied: {error}") from None
    except OSError as error:
        store.discard_staging(staged.staging_id)
        if error.errno in _NO_SPACE:
            raise _Full from None
        raise
    except BaseException:
        store.discard_staging(staged.staging_id)
        raise
    if found != expected:
        store.discard_staging(staged.staging_id)
        verify_instances(catalogue, {source.name: source}, names=[book.name], limit=10)
        raise _Refused(
            f"its copy in store {source.name!r} read {found}, the catalogue says {expected}: "
            "recorded as corrupt (librarian corrupt list)"
        )
    path = store.commit(staged, book.name)
    _record(catalogue, drive, book, path)
    report.copied.append(book.name)
    report.bytes += book.size
    drive.used += book.size


def _adopt(store: LocalStore, book: Book, expected: Checksum) -> bool:
    """A book already on the drive, not recorded (a fill died after its rename): True if
    its bytes are the book's; else it is removed (the book's copy here is the good one)."""
    path = store.path_for(book.name)
    try:
        if hash_path(path, expected.algorithm) == expected:
            return True
    except (OSError, ChecksumError):
        pass
    store.delete(book.name)
    return False


def _record(catalogue: Catalogue, drive: DriveFill, book: Book, path: Path) -> None:
    with catalogue.session() as session:
        now = datetime.now(UTC)
        session.add(
            Instance(
                file_id=book.id,
                store_id=drive.store_id,
                path=str(path),
                created_at=now,
                verified_at=now,
            )
        )


def _finish(
    catalogue: Catalogue,
    drive: DriveFill,
    report: FillReport,
    held_below: int,
    on_full: Callable[[FillReport], None] | None,
    started: float,
) -> None:
    """Totals for the report; the alert, then the mark and the ``full`` state."""
    with catalogue.session() as session:
        report.bytes_on_drive = drive_bytes(session, drive.store_id)
        report.books_on_drive = (
            session.scalar(select(func.count()).where(Instance.store_id == drive.store_id)) or 0
        )
    report.free_bytes = max(0, drive_room(drive.store, drive.config, report.bytes_on_drive))
    report.seconds = time.monotonic() - started
    if report.full and on_full is not None:
        on_full(report)
    with catalogue.session() as session:
        mark = min(drive.upto, held_below - 1)
        session.execute(
            update(Store)
            .where(Store.id == drive.store_id, Store.fill_high_water_file_id < mark)
            .values(fill_high_water_file_id=mark)
        )
        if report.full:
            session.execute(
                update(Store).where(Store.id == drive.store_id).values(state=DriveState.FULL)
            )
        if report.too_big:
            names = ", ".join(f"{name} ({size} bytes)" for name, size in report.too_big[:10])
            record_event(
                session,
                Severity.WARNING,
                "drive_too_small",
                f"store {drive.config.name}: {len(report.too_big)} books are larger than its "
                f"drive can take ({drive.limit} bytes) and were left out: {names}",
                subject=drive.config.name,
                details={"drive_uuid": drive.drive_uuid, "limit": drive.limit},
            )


class _Progress:
    """Calls ``log`` with the totals so far, at most every ``PROGRESS_EVERY`` seconds, and
    while one large book is copied, with its bytes so far at most every
    ``BYTES_PROGRESS_EVERY``: the run's log is its heartbeat (``stuck_runs_sensor`` takes a
    fill whose log is silent for hours for a hung drive)."""

    def __init__(self, log: Callable[[str], None] | None, report: FillReport) -> None:
        self.log, self.report = log, report
        self.last = time.monotonic()

    def book_done(self) -> None:
        now = time.monotonic()
        if self.log is not None and now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.log(self.report.summary() + " so far")

    def copying(self, name: str, size: int) -> Callable[[int], None]:
        copied = 0

        def moved(n: int) -> None:
            nonlocal copied
            copied += n
            now = time.monotonic()
            if self.log is not None and now - self.last >= BYTES_PROGRESS_EVERY:
                self.last = now
                self.log(f"copying {name}: {copied} of {size} bytes")

        return moved
