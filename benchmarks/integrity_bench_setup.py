"""Helpers of ``bench_integrity.py``: sites, books written straight into a store, page-cache
control, the read baseline, and a catalogue of a million copies for the slice queries."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, literal, select, text, tuple_, update
from sqlalchemy.engine import make_url

from benchmarks.bench_sensor_tick import postgres_databases
from benchmarks.clone_bench_setup import bulk_catalogue
from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.catalogue.models import CorruptFile, File, Instance, Store
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings, load_settings
from librarian_dagster.storage.checksums import hash_path, scan_tree
from librarian_dagster.storage.local_store import LocalStore

MIB = 1 << 20
READ_BUFFER = 8 * MIB  # the baseline's read size
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)  # the books' verified_at before every pass


# -- sites --------------------------------------------------------------------------------


@dataclass
class Site:
    backend: str
    settings: LibrarianSettings
    catalogue: Catalogue
    stores: dict[str, LocalStore]

    @property
    def store(self) -> LocalStore:
        return self.stores["main"]

    def store_id(self) -> int:
        with self.catalogue.session() as session:
            return int(session.scalar(select(Store.id).where(Store.name == "main")) or 0)


def open_site(directory: Path, database_url: str, backend: str, store_root: Path) -> Site:
    """A migrated catalogue and a ``main`` store at ``store_root`` (sites may share it)."""
    directory.mkdir(parents=True)
    config = directory / "librarian.toml"
    lines = [
        'name = "bench-site"',
        f'database_url = "{database_url}"',
        "[[stores]]",
        'name = "main"',
        f'root = "{store_root}"',
        "reserve_bytes = 0",
    ]
    config.write_text("\n".join(lines) + "\n")
    settings = load_settings(config)
    prepare(settings)
    return Site(backend, settings, get_catalogue(settings.catalogue_url), open_stores(settings))


@contextlib.contextmanager
def catalogue_urls(
    backends: list[str], root: Path, postgres_url: str, purpose: str
) -> Iterator[dict[str, str]]:
    """A catalogue URL per backend: a SQLite file under ``root``, or a fresh PostgreSQL
    database next to ``postgres_url`` (dropped at the end)."""
    urls = {}
    with contextlib.ExitStack() as stack:
        for backend in backends:
            if backend == "sqlite":
                urls[backend] = f"sqlite:///{root / f'{purpose}-catalogue.sqlite'}"
                continue
            (database,) = stack.enter_context(
                postgres_databases(postgres_url, f"bench_integrity_{purpose}")
            )
            url = make_url(postgres_url).set(drivername="postgresql+psycopg", database=database)
            urls[backend] = url.render_as_string(hide_password=False)
        yield urls


# -- the books ----------------------------------------------------------------------------


def books_layout(scale: float) -> list[tuple[str, list[int]]]:
    """(name, file sizes) in reading order; a list of one size is a file book. At scale 1:
    4 x 256 MiB, 24 x 32 MiB and 4 directories of 64 x 1 MiB (2 GiB, 32 books, 284 files),
    the kinds interleaved."""

    def size(mib: int) -> int:
        return max(4096, int(mib * MIB * scale))

    books: list[tuple[str, list[int]]] = []
    for group in range(4):
        books.append((f"bench/big-{group}", [size(256)]))
        books += [(f"bench/medium-{group}-{i}", [size(32)]) for i in range(6)]
        books.append((f"bench/dir-{group}", [size(1)] * 64))
    return books


def write_books(store: LocalStore, layout: list[tuple[str, list[int]]]) -> list[Path]:
    """Write the books into the store area (distinct bytes per file), flush them to disk
    (a dirty page cannot be evicted); return every file, in reading order."""
    block = os.urandom(64 * MIB)
    files: list[Path] = []
    for n, (name, sizes) in enumerate(layout):
        book = store.path_for(name)
        targets = [book] if len(sizes) == 1 else [book / f"part-{i:03d}.dat" for i in range(64)]
        for i, (target, size) in enumerate(zip(targets, sizes, strict=True)):
            target.parent.mkdir(parents=True, exist_ok=True)
            offset = (n * 7919 + i * 104729) % MIB
            with open(target, "wb") as out:
                written = 0
                while written < size:
                    piece = block[offset : offset + min(size - written, len(block) - offset)]
                    out.write(piece)
                    written += len(piece)
                    offset = 0
        if len(sizes) == 1:
            files.append(book)
        else:  # the order hash_path reads a directory book's files in
            files += [book / relpath for relpath, _ in scan_tree(book)[1]]
    os.sync()
    return files


def checksums(store: LocalStore, layout: list[tuple[str, list[int]]]) -> dict[str, str]:
    return {name: str(hash_path(store.path_for(name), "xxh3_128")) for name, _ in layout}


def catalogue_books(
    site: Site, layout: list[tuple[str, list[int]]], sums: dict[str, str]
) -> list[str]:
    """File + Instance rows for books already in the store (as tests/test_integrity_job.py
    ``shelve`` does): verified long ago, in reading order."""
    store_id = site.store_id()
    with site.catalogue.session() as session:
        for index, (name, sizes) in enumerate(layout):
            file = File(
                name=name,
                size=sum(sizes),
                checksum=sums[name],
                is_directory=len(sizes) > 1,
                uploader="bench",
                source=site.settings.name,
            )
            session.add(file)
            session.flush()
            session.add(
                Instance(
                    file_id=file.id,
                    store_id=store_id,
                    path=str(site.store.path_for(name)),
                    verified_at=LONG_AGO + timedelta(minutes=index),
                )
            )
    return [name for name, _ in layout]


def reset_verified(site: Site, names: list[str]) -> None:
    """Every copy due again, in reading order (between passes, untimed)."""
    with site.catalogue.session() as session:
        for index, name in enumerate(names):
            session.execute(
                update(Instance)
                .where(
                    Instance.file_id == select(File.id).where(File.name == name).scalar_subquery()
                )
                .values(verified_at=LONG_AGO + timedelta(minutes=index))
            )


# -- the page cache and the baseline --------------------------------------------------------


def evict(files: list[Path]) -> None:
    """Drop the (clean) files from the page cache; needs no root."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(files: list[Path]) -> float | None:
    """The share of the files' bytes in the page cache (util-linux ``fincore``), 0..1."""
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, files)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    total = sum(path.stat().st_size for path in files)
    return round(sum(int(value) for value in out) / total, 4) if total else 1.0


def read_all(files: list[Path]) -> int:
    """The baseline: each file read sequentially into one page-aligned 8 MiB buffer."""
    buffer = memoryview(mmap.mmap(-1, READ_BUFFER))
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    return total


def cat_all(files: list[Path]) -> int:
    """A reference, not the goal's baseline: coreutils ``cat`` of every file to /dev/null."""
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    return sum(path.stat().st_size for path in files)


# -- a million copies ------------------------------------------------------------------------

SPREAD_DAYS = 60
_SPREAD = {  # verified_at = base + id * step, whole seconds (SQLite: SQLAlchemy's text form)
    "sqlite": (
        "UPDATE instances SET verified_at = "
        "datetime(:base, '+' || CAST(id * :step AS INTEGER) || ' seconds') || '.000000'"
    ),
    "postgresql": (
        "UPDATE instances SET verified_at = "
        "CAST(:base AS timestamptz) + make_interval(secs => floor(id * :step))"
    ),
}
CORRUPT_EVERY = 100  # one copy in 100 has a corrupt-copy record ...
OPEN_RECORDS = 100  # ... the last 100 of them still open


def slice_catalogue(site: Site, files: int, now: datetime) -> dict[str, Any]:
    """``files`` files, one copy each in ``main`` (``clone_bench_setup.bulk_catalogue``),
    last verified from ``SPREAD_DAYS`` days before ``now`` to ``now`` in id order; 1 % with a
    corrupt-copy record: all repaired but the last ``OPEN_RECORDS`` (half of those never
    asked about, so due for a repair; a quarter retried minutes ago; a quarter refetching
    since an hour). PostgreSQL is then vacuumed and analyzed, as autovacuum would."""
    backend, catalogue = site.backend, site.catalogue
    bulk_catalogue(catalogue, backend, files, held=0)
    base = now.replace(microsecond=0) - timedelta(days=SPREAD_DAYS)
    base_text = base.strftime("%Y-%m-%d %H:%M:%S") + ("+00" if backend == "postgresql" else "")
    with catalogue.session() as session:
        session.execute(
            text(_SPREAD[backend]), {"base": base_text, "step": SPREAD_DAYS * 86400 / files}
        )
        rows = session.execute(
            text(
                "SELECT i.id, i.file_id, i.store_id, f.checksum FROM instances i "
                "JOIN files f ON f.id = i.file_id WHERE i.file_id % :every = 7 ORDER BY i.id"
            ),
            {"every": CORRUPT_EVERY},
        ).all()
        records = []
        for k, (instance_id, file_id, store_id, checksum) in enumerate(rows):
            kind = k - (len(rows) - OPEN_RECORDS)  # < 0: one of the repaired ones
            if kind < 0:
                status, updated, attempts = "repaired", now - timedelta(days=39), 0
            elif kind < OPEN_RECORDS // 2:  # never asked about: due
                status, updated, attempts = "detected", now - timedelta(hours=1), 0
            elif kind < OPEN_RECORDS * 3 // 4:  # asked 5 minutes ago: retried later
                status, updated, attempts = "detected", now - timedelta(minutes=5), 1
            else:  # a good copy on its way for an hour: not timed out
                status, updated, attempts = "refetching", now - timedelta(hours=1), 1
            records.append(
                {
                    "file_id": file_id,
                    "instance_id": instance_id,
                    "store_id": store_id,
                    "reason": "mismatch",
                    "expected_checksum": checksum,
                    "actual_checksum": "xxh3_128:" + "0" * 32,
                    "status": status,
                    "attempts": attempts,
                    "detected_at": updated - timedelta(hours=1),
                    "updated_at": updated,
                    "resolved_at": updated if kind < 0 else None,
                    "resolved_by": "verified" if kind < 0 else None,
                }
            )
        session.execute(insert(CorruptFile), records)
        bad = [r["instance_id"] for r in records if r["status"] != "repaired"]
        session.execute(update(Instance).where(Instance.id.in_(bad)).values(available=False))
    if backend == "postgresql":
        with catalogue.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE")
            )
    return {"records": len(records), "open_records": len(bad), "base": base.isoformat()}


def copy_at(site: Site, instance_id: int) -> tuple[datetime, int]:
    """(verified_at, id) of one copy: a keyset position."""
    with site.catalogue.session() as session:
        row = session.execute(
            select(Instance.verified_at, Instance.id).where(Instance.id == instance_id)
        ).one()
    return row[0], int(row[1])


def row_value_page(
    site: Site, store_ids: list[int], due: datetime, after: tuple[datetime, int], size: int
) -> int:
    """A diagnostic, not the library's query: ``in_service_page``'s page after ``after``
    with the keyset written as one row-value comparison, ``(verified_at, id) > (t, id)``."""
    last_time, last_id = after
    statement = (
        select(Instance.id, File.name, File.checksum, Store.name, File.size, Instance.verified_at)
        .join(File, Instance.file_id == File.id)
        .join(Store, Instance.store_id == Store.id)
        .where(
            Instance.available,
            Instance.store_id.in_(store_ids),
            Instance.verified_at.is_not(None),
            tuple_(Instance.verified_at, Instance.id)
            > tuple_(
                literal(last_time, Instance.verified_at.type), literal(last_id, Instance.id.type)
            ),
            Instance.verified_at < due,
        )
        .order_by(Instance.verified_at, Instance.id)
        .limit(size)
    )
    with site.catalogue.session() as session:
        rows = session.execute(statement).all()
    assert len(rows) == size, len(rows)
    return len(rows)


# -- query plans ----------------------------------------------------------------------------


@contextlib.contextmanager
def captured_selects(catalogue: Catalogue) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (and parameters) the library sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def listen(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(catalogue.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(catalogue.engine, "before_cursor_execute", listen)


def plans(site: Site, call: Callable[[], object]) -> list[dict[str, Any]]:
    """Run ``call`` once, then explain every SELECT it sent: SQLite's ``EXPLAIN QUERY PLAN``,
    PostgreSQL's ``EXPLAIN (ANALYZE, BUFFERS)`` (it runs the query again)."""
    with captured_selects(site.catalogue) as seen:
        call()
    found = []
    for statement, parameters in seen:
        sqlite = site.backend == "sqlite"
        prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
        with site.catalogue.engine.connect() as connection:
            rows = connection.exec_driver_sql(prefix + statement, parameters).all()
        lines = [str(row[3]) if sqlite else str(row[0]) for row in rows]
        found.append({"sql": " ".join(statement.split()), "plan": lines})
    return found
