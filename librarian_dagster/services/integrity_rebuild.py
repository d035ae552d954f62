"""After a catalogue loss: rebuild files and instances from the sidecars; and scan a store
for what the catalogue and the disk disagree about. Neither ever deletes anything.

``rebuild_store`` walks the store area (``storage.sidecars.walk``). For each sidecar whose
book is there, it reads the book (unless ``verify=False``) and, in one transaction per
book, records the File (name, size, checksum, directory flag, created, uploader, source,
as the sidecar says) and this store's Instance. A book whose bytes do not match its
sidecar is recorded too, but out of service with an open corrupt-copy record: its name and
checksum are known, a peer can repair it, and nothing claims it is good. A name the
catalogue already holds with the same checksum only gains the instance; with another
checksum it is left alone and reported. Remote instances (what peers hold) are not on this
disk; the peers' callbacks and ``librarian validate`` bring that knowledge back.

``scan_store`` reports, per store: dark data (on disk, not catalogued here), missing data
(catalogued in service here, not on disk), and disagreements (a sidecar that differs from
the catalogue, is unreadable, or has no book; a catalogued book without a sidecar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, Instance, Store
from librarian_dagster.services import corrupt
from librarian_dagster.services.integrity import read_copy
from librarian_dagster.states import CorruptionReason
from librarian_dagster.storage.checksums import Checksum, ChecksumError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.sidecars import Sidecar, SidecarError, read_sidecar, walk

LISTED = 1000  # names listed per kind of finding (the counts are exact)


@dataclass
class RebuildReport:
    recorded: list[str] = field(default_factory=list)
    already: int = 0
    corrupt: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    without_sidecar: list[str] = field(default_factory=list)
    bytes_read: int = 0


Progress = Callable[[str, int], None]


def _books_and_sidecars(store: LocalStore) -> tuple[dict[str, Path], dict[str, Path]]:
    books: dict[str, Path] = {}
    sidecars: dict[str, Path] = {}
    for entry in walk(store):
        (sidecars if entry.sidecar else books)[entry.name] = entry.path
    return books, sidecars


def rebuild_store(
    catalogue: Catalogue,
    store: LocalStore,
    *,
    verify: bool = True,
    progress: Progress | None = None,
) -> RebuildReport:
    report = RebuildReport()
    books, sidecars = _books_and_sidecars(store)
    report.without_sidecar = sorted(set(books) - set(sidecars))[:LISTED]
    with catalogue.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == store.name))
    if store_id is None:
        raise ValueError(f"store {store.name!r} is not in the catalogue: run librarian init")
    for name in sorted(sidecars):
        try:
            sidecar = read_sidecar(sidecars[name])
            expected = Checksum.parse(sidecar.checksum)
        except (SidecarError, ChecksumError) as error:
            report.unreadable.append(f"{name}: {error}")
            continue
        if name not in books or sidecar.name != name:
            report.unreadable.append(f"{name}: the sidecar has no book beside it")
            continue
        problem = None
        if verify:
            _, reason, detail = read_copy(store.path_for(name), expected)
            problem = None if reason is None else (reason, detail)
            report.bytes_read += sidecar.size
        _record(catalogue, store, store_id, sidecar, problem, report)
        if progress is not None:
            progress(name, sidecar.size)
    return report


def _record(
    catalogue: Catalogue,
    store: LocalStore,
    store_id: int,
    sidecar: Sidecar,
    problem: tuple[CorruptionReason, str] | None,
    report: RebuildReport,
) -> None:
    with catalogue.session() as session:
        file = session.scalar(select(File).where(File.name == sidecar.name))
        if file is not None and Checksum.parse(file.checksum) != Checksum.parse(sidecar.checksum):
            report.conflicts.append(
                f"{sidecar.name}: catalogued with {file.checksum}, sidecar says {sidecar.checksum}"
            )
            return
        if file is None:
            file = File(
                name=sidecar.name,
                size=sidecar.size,
                checksum=sidecar.checksum,
                is_directory=sidecar.is_directory,
                uploader=sidecar.uploader,
                source=sidecar.source,
                created_at=sidecar.created,
            )
            session.add(file)
            session.flush()
        instance = session.scalar(
            select(Instance).where(Instance.file_id == file.id, Instance.store_id == store_id)
        )
        if instance is not None:
            report.already += 1
            return
        now = datetime.now(UTC)
        instance = Instance(
            file_id=file.id,
            store_id=store_id,
            path=str(store.path_for(sidecar.name)),
            created_at=now,
            verified_at=now if problem is None else None,
        )
        session.add(instance)
        session.flush()
        if problem is not None:
            reason, detail = problem
            corrupt.record_bad_copy(session, instance, reason, sidecar.checksum, None, detail)
            report.corrupt.append(sidecar.name)
        else:
            report.recorded.append(sidecar.name)


@dataclass
class ScanReport:
    store: str
    dark: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    books_on_disk: int = 0
    catalogued: int = 0

    @property
    def clean(self) -> bool:
        return not (self.dark or self.missing or self.disagreements)


_COMPARED = ("checksum", "size", "is_directory", "uploader", "source")


def _differences(sidecar: Sidecar, row: tuple[object, ...]) -> list[str]:
    return [
        f"{name}: sidecar {getattr(sidecar, name)!r}, catalogue {value!r}"
        for name, value in zip(_COMPARED, row, strict=True)
        if getattr(sidecar, name) != value
    ]


def scan_store(catalogue: Catalogue, store: LocalStore) -> ScanReport:
    report = ScanReport(store.name)
    books, sidecars = _books_and_sidecars(store)
    report.books_on_disk = len(books)
    with catalogue.session() as session:
        rows = session.execute(
            select(
                File.name,
                *(getattr(File, name) for name in _COMPARED),
                Instance.available,
                Instance.deleted_at,
            )
            .join(Instance, Instance.file_id == File.id)
            .join(Store, Instance.store_id == Store.id)
            .where(Store.name == store.name)
            .execution_options(yield_per=1000)
        )
        # Plain tuples, not ORM rows: a store of a million books is scanned in bounded memory.
        catalogued: dict[str, tuple[object, ...]] = {}
        for name, *fields, available, deleted_at in rows:
            catalogued[name] = tuple(fields)
            if available and name not in books:
                report.missing.append(name)
            elif name in books and name not in sidecars and deleted_at is None:
                report.disagreements.append(f"{name}: no sidecar")
    report.catalogued = len(catalogued)
    report.dark = sorted(set(books) - set(catalogued))
    for name in sorted(sidecars):
        try:
            sidecar = read_sidecar(sidecars[name])
        except SidecarError as error:
            report.disagreements.append(f"{name}: unreadable sidecar ({error})")
            continue
        if name not in books:
            report.disagreements.append(f"{name}: a sidecar without its book")
        elif name in catalogued:
            report.disagreements += [
                f"{name}: {d}" for d in _differences(sidecar, catalogued[name])
            ]
    report.missing.sort()
    return report
