"""Benchmark one ingest-sensor tick on a big catalogue, on SQLite and on PostgreSQL.

Goal (from the issue): one tick with 100,000 books already catalogued and registered as
``books`` partitions and 500 new uploads waiting takes at most 1 s on each backend.

A tick here is what the sensor daemon does before it launches runs:

* ``sensor``: build the sensor context with a fresh ``CatalogueResource`` and evaluate
  ``ingest_sensor`` (inbox scan, the pending-transfer queries, grouping, ``mark_launched``);
* ``partitions``: apply the returned ``AddDynamicPartitionsRequest`` with the daemon's own
  handler (``dagster._daemon.sensor._handle_dynamic_partitions_requests``), which asks
  ``has_dynamic_partition`` once per key and then calls ``add_dynamic_partitions`` for the
  keys that are new. ``add_dynamic_partitions`` on its own is timed too, for comparison.

Not timed: launching the runs (the run queue's job), the gRPC hop from the daemon to the
code server and the tick bookkeeping in schedule storage. The process is warm (engines and
imports loaded, as in a long-running code server): empty ticks run before the timed ones.

Each backend gets fresh storage that is removed afterwards: a temporary directory for
SQLite; for PostgreSQL two new databases (``bench_catalogue_<hex>`` for the catalogue,
``bench_dagster_<hex>`` for dagster-postgres) on the server of ``--postgres-url``, dropped
at the end. The Dagster instance is a real persistent one, configured by the librarian's own
``prepare`` (``dagster.yaml`` from settings).

Usage: python benchmarks/bench_sensor_tick.py [--backend both] [--books 100000]
       [--waiting 500] [--repeats 5] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import logging
import os
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._daemon.sensor import _handle_dynamic_partitions_requests
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer, Instance, Store
from librarian_dagster.dagster_instance import DAGSTER_PG_URL_ENV, prepare_dagster_home
from librarian_dagster.jobs.names import BOOKS_PARTITIONS
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.sensors.ingest import ingest_sensor
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings, load_settings
from librarian_dagster.states import TransferKind, TransferStatus

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "sensor_tick.json"
GOAL_SECONDS = 1.0
CHUNK = 10_000  # rows per bulk insert, keys per add_dynamic_partitions while setting up
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KIB, GIB = 1 << 10, 1 << 30
FIRST_DAY = datetime.date(2024, 1, 1)
BOOKS_PER_DAY = 1000


# -- storage for one backend -------------------------------------------------------------


@dataclass
class Site:
    backend: str
    settings: LibrarianSettings
    config_file: str
    catalogue: Catalogue
    instance: dg.DagsterInstance


def write_config(directory: Path, database_url: str, dagster_postgres_url: str = "") -> Path:
    lines = [
        'name = "bench-site"',
        f'database_url = "{database_url}"',
        "[dagster]",
        f'postgres_url = "{dagster_postgres_url}"',
        "[[stores]]",
        'name = "main"',
        'root = "stores/main"',
        "reserve_bytes = 0",
    ]
    path = directory / "librarian.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def postgres_databases(admin_url: str, *prefixes: str) -> Iterator[list[str]]:
    """Fresh databases named ``<prefix>_<hex>``; dropped (connections and all) at the end."""
    suffix = uuid.uuid4().hex[:10]
    names = [f"{prefix}_{suffix}" for prefix in prefixes]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield names
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def open_site(backend: str, postgres_url: str) -> Iterator[Site]:
    """Settings, migrated catalogue and Dagster instance on fresh storage for ``backend``."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_sensor_")))
        if backend == "sqlite":
            config = write_config(work, f"sqlite:///{work / 'catalogue.sqlite'}")
        else:
            catalogue_db, dagster_db = stack.enter_context(
                postgres_databases(postgres_url, "bench_catalogue", "bench_dagster")
            )
            base = make_url(postgres_url)
            catalogue_url = base.set(drivername="postgresql+psycopg", database=catalogue_db)
            dagster_url = base.set(drivername="postgresql", database=dagster_db)
            config = write_config(
                work,
                catalogue_url.render_as_string(hide_password=False),
                dagster_url.render_as_string(hide_password=False),
            )
        settings = load_settings(config)
        # dagster.yaml names this variable rather than holding the URL (as under `serve`).
        os.environ[DAGSTER_PG_URL_ENV] = settings.dagster.postgres_url
        prepare(settings)
        prepare_dagster_home(settings)
        catalogue = get_catalogue(settings.catalogue_url)
        stack.callback(catalogue.dispose)
        instance = dg.DagsterInstance.from_config(str(settings.dagster_home))
        stack.callback(instance.dispose)
        yield Site(backend, settings, str(config), catalogue, instance)


# -- the data ------------------------------------------------------------------------------


def book_name(index: int) -> str:
    """Observation-like names, a thousand a day: ``2024/01/01/obs_0000000.uvh5``."""
    day = FIRST_DAY + datetime.timedelta(days=index // BOOKS_PER_DAY)
    return f"{day:%Y/%m/%d}/obs_{index:07d}.uvh5"


def upload_size(rng: random.Random) -> int:
    """Log-uniform between 1 KiB and 20 GiB: many small books, a few huge ones."""
    return int(KIB * (20 * GIB / KIB) ** rng.random())


def checksum(rng: random.Random) -> str:
    return f"xxh3_128:{rng.getrandbits(128):032x}"


def catalogue_books(site: Site, books: int, rng: random.Random) -> None:
    """``books`` files, one instance each and the stored upload that brought each in."""
    store = open_stores(site.settings)["main"]
    with site.catalogue.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == "main"))
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    for first in range(0, books, CHUNK):
        indexes = range(first, min(first + CHUNK, books))
        files, instances, transfers = [], [], []
        for i in indexes:
            name, size, digest = book_name(i), upload_size(rng), checksum(rng)
            created = start + datetime.timedelta(seconds=30 * i)
            staging_id = uuid.UUID(int=rng.getrandbits(128)).hex
            files.append(
                {
                    "id": i + 1,
                    "name": name,
                    "size": size,
                    "checksum": digest,
                    "is_directory": False,
                    "uploader": "obs",
                    "source": "bench-site",
                    "created_at": created,
                }
            )
            instances.append(
                {
                    "file_id": i + 1,
                    "store_id": store_id,
                    "path": str(store.store_dir / name),
                    "available": True,
                    "created_at": created,
                    "verified_at": created,
                }
            )
            transfers.append(
                {
                    "kind": TransferKind.UPLOAD,
                    "status": TransferStatus.STORED,
                    "name": name,
                    "size": size,
                    "checksum": digest,
                    "uploader": "obs",
                    "source": "bench-site",
                    "store_id": store_id,
                    "staging_id": staging_id,
                    "staging_path": str(store.staging_dir / staging_id / name.rsplit("/")[-1]),
                    "run_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "attempts": 1,
                    "launched_at": created,
                    "created_at": created,
                    "updated_at": created,
                    "completed_at": created,
                }
            )
        with site.catalogue.session() as session:
            session.execute(insert(File), files)
            session.execute(insert(Instance), instances)
            session.execute(insert(IncomingTransfer), transfers)


def register_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    for first in range(0, len(keys), CHUNK):
        instance.add_dynamic_partitions(BOOKS_PARTITIONS, keys[first : first + CHUNK])


def stage_uploads(site: Site, books: int, waiting: int, rng: random.Random) -> list[int]:
    """``waiting`` uploads staged after the catalogued books; returns their transfer ids."""
    store = open_stores(site.settings)["main"]
    now = datetime.datetime.now(datetime.UTC)
    with site.catalogue.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == "main"))
        rows = []
        for i in range(books, books + waiting):
            staging_id = uuid.UUID(int=rng.getrandbits(128)).hex
            name = book_name(i)
            rows.append(
                {
                    "kind": TransferKind.UPLOAD,
                    "status": TransferStatus.STAGED,
                    "name": name,
                    "size": upload_size(rng),
                    "checksum": checksum(rng),
                    "uploader": "obs",
                    "source": "bench-site",
                    "store_id": store_id,
                    "staging_id": staging_id,
                    "staging_path": str(store.staging_dir / staging_id / name.rsplit("/")[-1]),
                    "attempts": 0,
                    "launched_at": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        session.execute(insert(IncomingTransfer), rows)
        ids = session.scalars(
            select(IncomingTransfer.id)
            .where(IncomingTransfer.status == TransferStatus.STAGED)
            .order_by(IncomingTransfer.id)
        ).all()
    return list(ids)


def unlaunch(site: Site, transfer_ids: Sequence[int]) -> None:
    """Make the waiting uploads look never requested again (between repetitions)."""
    with site.catalogue.session() as session:
        session.execute(
            update(IncomingTransfer)
            .where(IncomingTransfer.id.in_(transfer_ids))
            .values(launched_at=None)
        )


def forget_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    for key in keys:
        instance.delete_dynamic_partition(BOOKS_PARTITIONS, key)


# -- one tick ------------------------------------------------------------------------------


class _DaemonTickStub:
    """The two members of the daemon's SensorLaunchContext that the partitions handler uses."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("bench_sensor_tick.daemon")
        self.results: list[object] = []

    def add_dynamic_partitions_request_result(self, result: object) -> None:
        self.results.append(result)


@dataclass
class Tick:
    sensor: float
    partitions: float
    run_requests: int
    books_per_run: list[int]
    added: int
    cursor: str | None

    @property
    def total(self) -> float:
        return self.sensor + self.partitions


def tick(site: Site, cursor: str | None, profiler: cProfile.Profile | None = None) -> Tick:
    """One evaluation of the sensor plus the daemon's handling of any partitions request.

    The sensor now adds its partitions itself in one batched call (inside "sensor"); the
    daemon's per-key handler only runs if a sensor still returns a partitions request.
    """
    before = len(site.instance.get_dynamic_partitions("books"))
    with profiler or contextlib.nullcontext():
        start = time.perf_counter()
        context = dg.build_sensor_context(
            instance=site.instance,
            resources={"catalogue": CatalogueResource(config_file=site.config_file)},
            cursor=cursor,
        )
        result = ingest_sensor(context)
        sensor = time.perf_counter() - start
        start = time.perf_counter()
        daemon = _DaemonTickStub()
        if result.dynamic_partitions_requests:
            _handle_dynamic_partitions_requests(
                result.dynamic_partitions_requests,
                site.instance,
                daemon,  # type: ignore[arg-type]
            )
        partitions = time.perf_counter() - start
    requests = result.run_requests or []
    return Tick(
        sensor=sensor,
        partitions=partitions,
        run_requests=len(requests),
        books_per_run=[
            len(r.run_config["ops"]["verify_and_store"]["config"]["transfer_ids"]) for r in requests
        ],
        added=len(site.instance.get_dynamic_partitions("books")) - before,
        cursor=result.cursor if result.cursor is not None else cursor,
    )


def seconds(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def print_top(profiler: cProfile.Profile, title: str, limit: int = 25) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(limit)
    print(f"--- {title} (cProfile, cumulative) ---\n{out.getvalue()}")


# -- one backend ---------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(2024)
    with open_site(backend, args.postgres_url) as site:
        print(f"[{backend}] setting up {args.books:,} books ...", flush=True)
        start = time.perf_counter()
        catalogue_books(site, args.books, rng)
        catalogue_seconds = time.perf_counter() - start
        start = time.perf_counter()
        register_partitions(site.instance, [book_name(i) for i in range(args.books)])
        partitions_seconds = time.perf_counter() - start
        assert len(site.instance.get_dynamic_partitions(BOOKS_PARTITIONS)) == args.books
        cursor: str | None = str(args.books)

        # Nothing waiting: the tick that runs every second forever.
        empty = [tick(site, cursor) for _ in range(max(args.repeats, 5))]
        assert all(t.run_requests == 0 for t in empty)

        ids = stage_uploads(site, args.books, args.waiting, rng)
        assert len(ids) == args.waiting
        new_keys = [book_name(i) for i in range(args.books, args.books + args.waiting)]
        ticks = []
        for repeat in range(args.repeats):
            if repeat:
                unlaunch(site, ids)
            ticks.append(tick(site, cursor))
            cursor = ticks[-1].cursor
        cold, warm = ticks[0], ticks[1:]
        assert cold.added == args.waiting and all(t.added == 0 for t in warm)
        assert sum(cold.books_per_run) == args.waiting

        # All requested but no run has claimed them yet: the tick skips them.
        idle = [tick(site, cursor) for _ in range(max(args.repeats, 5))]
        assert all(t.run_requests == 0 for t in idle)

        if args.profile:
            forget_partitions(site.instance, new_keys)
            unlaunch(site, ids)
            profiler = cProfile.Profile()
            tick(site, cursor, profiler)
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(args.profile / f"{backend}-cold-tick.pstats")
            print_top(profiler, f"{backend}: cold tick")

        # add_dynamic_partitions alone, without the daemon's per-key has_dynamic_partition.
        forget_partitions(site.instance, new_keys)
        start = time.perf_counter()
        site.instance.add_dynamic_partitions(BOOKS_PARTITIONS, new_keys)
        add_cold = time.perf_counter() - start
        start = time.perf_counter()
        site.instance.add_dynamic_partitions(BOOKS_PARTITIONS, new_keys)
        add_warm = time.perf_counter() - start

        warm_totals = [t.total for t in warm]
        return {
            "setup_seconds": {
                "catalogue": round(catalogue_seconds, 2),
                "partitions": round(partitions_seconds, 2),
            },
            "cold_tick": {
                "sensor_s": round(cold.sensor, 4),
                "partitions_s": round(cold.partitions, 4),
                "total_s": round(cold.total, 4),
                "partitions_added": cold.added,
            },
            "warm_ticks": {
                "count": len(warm),
                "sensor_s": seconds([t.sensor for t in warm]) if warm else None,
                "partitions_s": seconds([t.partitions for t in warm]) if warm else None,
                "total_s": seconds(warm_totals) if warm else None,
                "all_total_s": [round(t, 4) for t in warm_totals],
            },
            "empty_tick_s": seconds([t.total for t in empty]),
            "idle_tick_all_requested_s": seconds([t.total for t in idle]),
            "add_dynamic_partitions_alone_s": {
                "cold": round(add_cold, 4),
                "warm": round(add_warm, 4),
            },
            "run_requests": cold.run_requests,
            "books_per_run": cold.books_per_run,
            "waiting_bytes": sum_waiting_bytes(site, ids),
            "goal": {
                "seconds": GOAL_SECONDS,
                "cold_total_s": round(cold.total, 4),
                "pass": cold.total <= GOAL_SECONDS,
                "warm_median_total_s": round(statistics.median(warm_totals), 4) if warm else None,
                "warm_pass": bool(warm) and statistics.median(warm_totals) <= GOAL_SECONDS,
            },
        }


def sum_waiting_bytes(site: Site, ids: Sequence[int]) -> int:
    with site.catalogue.session() as session:
        sizes = session.scalars(select(IncomingTransfer.size).where(IncomingTransfer.id.in_(ids)))
        return sum(sizes)


# -- report --------------------------------------------------------------------------------


def postgres_version(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())
    except Exception:  # informational only
        return None
    finally:
        engine.dispose()


def machine(args: argparse.Namespace) -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dagster": dg.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(args.postgres_url)
        if "postgresql" in args.backends
        else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def table(backends: dict[str, dict[str, Any]]) -> str:
    """The README table: one column per backend."""
    names = list(backends)

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(backends[n]) for n in names) + " |"

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    lines = [
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
        row("cold tick: sensor", lambda r: ms(r["cold_tick"]["sensor_s"])),
        row("cold tick: partitions (daemon handler)", lambda r: ms(r["cold_tick"]["partitions_s"])),
        row("**cold tick: total**", lambda r: f"**{ms(r['cold_tick']['total_s'])}**"),
        row("warm tick median: sensor", lambda r: ms(r["warm_ticks"]["sensor_s"]["median"])),
        row(
            "warm tick median: partitions",
            lambda r: ms(r["warm_ticks"]["partitions_s"]["median"]),
        ),
        row(
            "**warm tick median: total**",
            lambda r: f"**{ms(r['warm_ticks']['total_s']['median'])}**",
        ),
        row("empty tick (median)", lambda r: ms(r["empty_tick_s"]["median"])),
        row(
            "idle tick, waiting books all requested (median)",
            lambda r: ms(r["idle_tick_all_requested_s"]["median"]),
        ),
        row(
            "`add_dynamic_partitions` alone, cold / warm",
            lambda r: (
                f"{ms(r['add_dynamic_partitions_alone_s']['cold'])} / "
                f"{ms(r['add_dynamic_partitions_alone_s']['warm'])}"
            ),
        ),
        row("run requests returned", lambda r: str(r["run_requests"])),
        row(
            "goal ≤ 1 s (cold / warm)",
            lambda r: (
                f"{'pass' if r['goal']['pass'] else 'FAIL'} / "
                f"{'pass' if r['goal']['warm_pass'] else 'FAIL'}"
            ),
        ),
        row(
            "setup: catalogue / partitions",
            lambda r: (
                f"{r['setup_seconds']['catalogue']:.0f} s / "
                f"{r['setup_seconds']['partitions']:.0f} s"
            ),
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--books", type=int, default=100_000)
    parser.add_argument("--waiting", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LIBRARIAN_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="a database on the server to use; fresh databases are created beside it",
    )
    parser.add_argument("--profile", type=Path, help="also profile one cold tick; pstats here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (one cold tick, then warm ones)")
    logging.getLogger("dagster").setLevel(logging.WARNING)

    load_before = os.getloadavg()[0]
    backends = {backend: run_backend(backend, args) for backend in args.backends}
    result = {
        # Other work on the machine skews the numbers: compare the 1-minute load before and
        # after with the benchmark's own ~1.
        "machine": {**machine(args), "loadavg_1min": [load_before, os.getloadavg()[0]]},
        "parameters": {
            "books": args.books,
            "waiting": args.waiting,
            "repeats": args.repeats,
            "goal_seconds": GOAL_SECONDS,
            "tick": "ingest_sensor evaluation + daemon handling of its AddDynamicPartitionsRequest",
        },
        "backends": backends,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(backends))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
