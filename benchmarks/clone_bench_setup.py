"""Helpers of ``bench_clone.py``: live librarian pairs, books, timelines, catalogues in bulk.

Importing this module sets ``LIBRARIAN_STATE_DIR`` to a temporary directory (removed at
exit) before ``tests.live`` is imported, as ``tests/conftest.py`` does for the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import inspect
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests.live, when run as a script from anywhere
if "LIBRARIAN_STATE_DIR" not in os.environ:  # serve-lock pointers go here, not to ~
    os.environ["LIBRARIAN_STATE_DIR"] = tempfile.mkdtemp(prefix="bench-clone-state-")
    atexit.register(shutil.rmtree, os.environ["LIBRARIAN_STATE_DIR"], ignore_errors=True)

import dagster as dg  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from benchmarks.bench_ingest import cached_fraction  # noqa: E402
from librarian_dagster.catalogue.models import Librarian  # noqa: E402
from librarian_dagster.client import LibrarianClient  # noqa: E402
from librarian_dagster.jobs.names import BATCH_TAG, RECEIVE_OP  # noqa: E402
from librarian_dagster.storage.checksums import hash_path  # noqa: E402
from librarian_dagster.storage.movers.copy import copy_and_hash  # noqa: E402
from librarian_dagster.storage.movers.local import WORKER_MODULE  # noqa: E402
from librarian_dagster.storage.posix import remove_if_present  # noqa: E402
from tests.clone_live import admin, query  # noqa: E402
from tests.live import LiveLibrarian  # noqa: E402

UTC = datetime.UTC


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "min": r3(min(values)),
        "median": r3(statistics.median(values)),
        "max": r3(max(values)),
        "sum": r3(sum(values)),
    }


def epoch(value: Any) -> float | None:
    """A catalogue timestamp (SQLite text, naive UTC) as seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


# -- live librarians ------------------------------------------------------------------------


def transfer_lines(transfer: dict[str, object]) -> list[str]:
    return ["[transfer]", *(f"{key} = {value}" for key, value in transfer.items())]


@contextlib.contextmanager
def live_pair(
    root: Path,
    transfer: dict[str, object],
    storage: dict[str, tuple[str, str]] | None = None,
) -> Iterator[list[LiveLibrarian]]:
    """site-a and site-b serving under ``root`` (stopped, and their mover workers ended,
    whatever happens); not yet peers. ``storage``: per site, (catalogue URL, Dagster storage
    URL) on PostgreSQL; default SQLite for both, under the site's directory."""
    started: list[LiveLibrarian] = []
    try:
        for name in ("site-a", "site-b"):
            directory = root / name
            directory.mkdir(parents=True)
            catalogue_url, dagster_url = (storage or {}).get(name, ("", ""))
            live = LiveLibrarian(
                directory,
                name=name,
                extra_config=transfer_lines(transfer),
                database_url=catalogue_url,
                dagster_postgres_url=dagster_url,
            )
            started.append(live)
            begun = time.monotonic()
            live.start()
            print(f"  {name} up in {time.monotonic() - begun:.1f} s ({live.api_url})", flush=True)
        yield started
    finally:
        for live in started:
            with contextlib.suppress(Exception):
                live.stop()
        stop_workers(root)


def stop_workers(root: Path) -> list[int]:
    """End LocalMover workers still copying under ``root`` (detached from serve), by pid."""
    ended = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if WORKER_MODULE in cmdline and str(root) in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGTERM)
                ended.append(int(entry.name))
    return ended


def uploader(live: LiveLibrarian) -> LibrarianClient:
    with admin(live) as client:
        made = client.post(
            "/users", json={"name": "alice", "password": "alice-password", "level": "read_append"}
        )
        made.raise_for_status()
    return LibrarianClient(live.api_url, "alice", "alice-password", timeout=120)


def held_at(live: LiveLibrarian, peer: str) -> int:
    """Books ``live`` records a remote instance of at ``peer``."""
    return int(
        query(
            live,
            "SELECT count(*) FROM remote_instances r JOIN librarians l ON l.id = r.librarian_id "
            "WHERE l.name = :peer",
            peer=peer,
        )[0][0]
    )


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    sites: Sequence[LiveLibrarian],
    every: float = 0.5,
    on_poll: Callable[[Any], None] | None = None,
) -> float:
    """Poll ``condition`` every ``every`` s until it is truthy; the time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        seen = time.time()
        if on_poll is not None:
            on_poll(value)
        if value:
            return seen
        for live in sites:
            if live.process is not None and live.process.poll() is not None:
                raise RuntimeError(f"{live.name} exited:\n{live.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.name}\n{s.log()[-3000:]}" for s in sites)
            raise TimeoutError(f"timed out waiting for {what}\n{logs}")
        time.sleep(every)


# -- books -------------------------------------------------------------------------------


def small_books(root: Path, count: int, seed: int = 11) -> list[tuple[Path, str]]:
    """``count`` books of a few hundred bytes to a few KiB (log-uniform 200 B - 8 KiB);
    every tenth a directory of three such files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def size() -> int:
        return int(200 * (8192 / 200) ** rng.random())

    pairs = []
    for i in range(count):
        if i % 10 == 9:
            book = root / f"dir{i:05d}"
            (book / "sub").mkdir(parents=True)
            (book / "a.dat").write_bytes(rng.randbytes(size()))
            (book / "b.dat").write_bytes(rng.randbytes(size()))
            (book / "sub" / "c.dat").write_bytes(rng.randbytes(size()))
        else:
            book = root / f"file{i:05d}.dat"
            book.write_bytes(rng.randbytes(size()))
        pairs.append((book, f"bench/2026/12/07/book{i:05d}"))
    return pairs


# -- the big book's baselines ------------------------------------------------------------------

MIB = 1 << 20


def sync() -> None:
    subprocess.run(["sync"], check=True)


def drop_caches() -> bool:
    """Drop the page cache (root, and a writable /proc/sys); whether it was done."""
    sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def make_big_file(path: Path, size: int) -> None:
    """A 64 MiB random block, repeated: random enough for the hash and for cp."""
    block = os.urandom(64 * MIB)
    with open(path, "wb") as out:
        for offset in range(0, size, len(block)):
            out.write(block[: size - offset])


def write_first(src: Path, before: Path | None) -> None:
    """Untimed: a copy of ``src`` written, fsynced and kept, as the upload is before the
    clone's copy. This disk (ext4 ``discard``, a write-back cache below) absorbs a 4 GiB
    write at 2+ GB/s when the previous one was deleted at once, and runs at its sustained
    ~0.4 GB/s while the previous one is still being written through."""
    if before is not None:
        copy_and_hash(src, before)


def baseline(src: Path, dst: Path, drop: bool, before: Path | None = None) -> dict[str, Any]:
    """``cp`` to a new file on the same filesystem, fsync it, hash the copy."""
    write_first(src, before)
    dropped = drop_caches() if drop else False
    sync()
    source_cached = cached_fraction(src)
    start = time.time()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    copied = time.time()
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = time.time()
    hash_path(dst)
    end = time.time()
    remove_if_present(dst)
    if before is not None:
        remove_if_present(before)
    return {
        "total_s": r3(end - start),
        "cp_s": r3(copied - start),
        "fsync_s": r3(synced - copied),
        "hash_s": r3(end - synced),
        "source_cached": source_cached,
        "caches_dropped": dropped,
    }


def mover_alone(src: Path, dst: Path, before: Path) -> dict[str, Any]:
    """The LocalMover worker's call on its own, in this process, after a kept write (as in
    the clone): ``copy_and_hash`` with its defaults (fsyncs), as ``local_worker`` calls it."""
    write_first(src, before)
    sync()
    start = time.time()
    copy_and_hash(src, dst)
    end = time.time()
    remove_if_present(dst)
    remove_if_present(before)
    return {"total_s": r3(end - start), "mb_per_s": round(src.stat().st_size / 1e6 / (end - start))}


# -- what happened, read afterwards ----------------------------------------------------------


def run_records(live: LiveLibrarian, job: str) -> list[dict[str, Any]]:
    """The Dagster runs of ``job`` on ``live``: times, status, tags, transfer ids."""
    with live.dagster_instance() as instance:
        records = instance.get_run_records(dg.RunsFilter(job_name=job))
    runs = []
    for record in records:
        run = record.dagster_run
        config = run.run_config.get("ops", {}).get(RECEIVE_OP, {}).get("config", {})
        runs.append(
            {
                "run_id": run.run_id,
                "status": run.status.value,
                "created": record.create_timestamp.timestamp(),
                "start": record.start_time,
                "end": record.end_time,
                "batch": run.tags.get(BATCH_TAG),
                "books": len(config.get("transfer_ids", [])),
            }
        )
    return sorted(runs, key=lambda run: run["created"])


def run_events(live: LiveLibrarian, run_id: str, limit: int = 60) -> list[str]:
    """One run's event log, seconds after its first event (the JSON's example)."""
    rows: list[str] = []
    with live.dagster_instance() as instance:
        entries = instance.all_logs(run_id)
    first = entries[0].timestamp if entries else 0.0
    for entry in entries:
        kind = entry.dagster_event_type.value if entry.dagster_event_type else "LOG"
        message = entry.user_message or ""
        rows.append(f"{entry.timestamp - first:7.3f} {kind} {message[:100]}")
    return rows if len(rows) <= limit else [*rows[: limit // 2], "...", *rows[-limit // 2 :]]


def run_stats(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Count, queue wait (created -> start) and duration (start -> end) of some runs."""
    finished = [r for r in runs if r["start"] is not None and r["end"] is not None]
    return {
        "count": len(runs),
        "statuses": sorted({r["status"] for r in runs}),
        "queue_s": summary([r["start"] - r["created"] for r in finished]),
        "duration_s": summary([r["end"] - r["start"] for r in finished]),
    }


def birth_time(path: Path) -> float | None:
    """A file's creation time (statx btime, GNU ``stat``), or None."""
    try:
        out = subprocess.run(["stat", "-c", "%.9W", str(path)], capture_output=True, text=True)
        return float(out.stdout) or None
    except (OSError, ValueError):
        return None


def mover_task_times(live: LiveLibrarian, submission_id: str | None) -> dict[str, float | None]:
    """A LocalMover task's times: written (task.json's ``created``), worker at work (its
    results.jsonl made, after the worker process started), last item done (that file's
    mtime), over (final.json's mtime)."""
    task = live.directory / "state" / "movers" / "local" / str(submission_id)
    found: dict[str, float | None] = {"written": None, "worker": None, "items": None, "over": None}
    with contextlib.suppress(OSError, KeyError, ValueError):
        found["written"] = epoch(json.loads((task / "task.json").read_text())["created"])
        found["worker"] = birth_time(task / "results.jsonl")
        found["items"] = (task / "results.jsonl").stat().st_mtime
        found["over"] = (task / "final.json").stat().st_mtime
    return found


MILESTONES = (
    "formed",
    "run1_start",
    "submitted",
    "worker_started",
    "copied",
    "settled",
    "stored_b_first",
    "stored_b_last",
    "complete_last",
)
PHASES = (  # (label, from milestone, to milestone) of one batch, consecutive
    ("formed -> first clone_batch run starts (queue, run worker start)", "formed", "run1_start"),
    ("run: stage at B + submit to the mover", "run1_start", "submitted"),
    (
        "mover: worker process start (submit -> its results file made)",
        "submitted",
        "worker_started",
    ),
    ("mover: copy + hash + fsync of the books, task end", "worker_started", "copied"),
    ("copy over -> settled (poll, clone_batch run, /clones/staged)", "copied", "settled"),
    ("settled -> last book stored at B (receive sensor + runs)", "settled", "stored_b_last"),
    ("last stored at B -> last remote instance at A (callback)", "stored_b_last", "complete_last"),
)


def batch_timelines(a: LiveLibrarian, b: LiveLibrarian, t0: float) -> list[dict[str, Any]]:
    """Per batch of A: milestones (s after ``t0``) from both catalogues, the mover's task
    directory and A's clone_batch runs; phases between consecutive milestones."""
    outgoing = query(
        a, "SELECT id, batch_id, completed_at FROM outgoing_transfers WHERE batch_id IS NOT NULL"
    )
    incoming = {
        row[0]: row[1:]
        for row in query(
            b,
            "SELECT source_transfer_id, created_at, completed_at, run_id FROM incoming_transfers "
            "WHERE kind = 'clone'",
        )
    }
    runs_by_batch: dict[str, list[dict[str, Any]]] = {}
    for run in run_records(a, "clone_batch"):
        runs_by_batch.setdefault(str(run["batch"]), []).append(run)
    found = []
    batches = query(
        a,
        "SELECT id, file_count, status, created_at, submitted_at, completed_at, submission_id "
        "FROM transfer_batches ORDER BY id",
    )
    for batch_id, books, status, created, submitted, completed, submission in batches:
        mine = [row for row in outgoing if row[1] == batch_id]
        at_b = [incoming[row[0]] for row in mine if row[0] in incoming]
        runs = runs_by_batch.get(str(batch_id), [])
        task = mover_task_times(a, submission)
        stored_b = [epoch(row[1]) for row in at_b if row[1] is not None]
        complete = [epoch(row[2]) for row in mine if row[2] is not None]

        def rel(value: float | None) -> float | None:
            return None if value is None else r3(value - t0)

        milestones = {
            "formed": rel(epoch(created)),
            "run1_start": rel(runs[0]["start"] if runs else None),
            "submitted": rel(epoch(submitted)),
            "worker_started": rel(task["worker"]),
            "copied": rel(task["over"]),
            "settled": rel(epoch(completed)),
            "stored_b_first": rel(min(stored_b) if stored_b else None),
            "stored_b_last": rel(max(stored_b) if stored_b else None),
            "complete_last": rel(max(complete) if complete else None),
        }
        phases = {}
        for label, start, end in PHASES:
            s, e = milestones[start], milestones[end]
            phases[label] = None if s is None or e is None else r3(e - s)
        found.append(
            {
                "batch_id": batch_id,
                "books": books,
                "status": status,
                "clone_batch_runs_queue_run_s": [
                    [r3(r["start"] - r["created"]), r3(r["end"] - r["start"])]
                    for r in runs
                    if r["start"] and r["end"]
                ],
                "receive_runs_at_b": len({row[2] for row in at_b}),
                "milestones_s": milestones,
                "phases_s": phases,
            }
        )
    return found


# -- the clone tick's catalogue: a million files, in bulk -----------------------------------------

_FILES = {
    "sqlite": (
        "INSERT INTO files (id, name, size, checksum, is_directory, uploader, source, created_at) "
        "WITH RECURSIVE seq(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM seq WHERE i < :hi) "
        "SELECT i, printf('bench/%07d.dat', i), 1000 + i % 5000, printf('xxh3_128:%032x', i), 0, "
        "'obs', 'bench-site', :created FROM seq"
    ),
    "postgresql": (
        "INSERT INTO files (id, name, size, checksum, is_directory, uploader, source, created_at) "
        "SELECT i, 'bench/' || lpad(i::text, 7, '0') || '.dat', 1000 + i % 5000, "
        "'xxh3_128:' || lpad(to_hex(i), 32, '0'), false, 'obs', 'bench-site', "
        "CAST(:created AS timestamptz) FROM generate_series(CAST(:lo AS bigint), :hi) AS i"
    ),
}
_INSTANCES = (
    "INSERT INTO instances (file_id, store_id, path, available, created_at, verified_at) "
    "SELECT id, :store, '/stores/main/store/' || name, :yes, created_at, created_at FROM files "
    "WHERE id BETWEEN :lo AND :hi"
)
_REMOTES = (
    "INSERT INTO remote_instances (file_id, librarian_id, store_name, created_at) "
    "SELECT id, :peer, 'main', created_at FROM files WHERE id BETWEEN :lo AND :hi"
)
CHUNK = 200_000


def bulk_catalogue(catalogue: Any, backend: str, files: int, held: int) -> int:
    """``files`` files with an available instance each, a peer ``peer-b`` (local mover)
    whose mark is at ``held`` and which holds files 1..``held``; returns the peer's id."""
    created = "2024-01-01 00:00:00.000000" if backend == "sqlite" else "2024-01-01T00:00:00Z"
    with catalogue.session() as session:
        store = session.scalar(text("SELECT id FROM stores WHERE name = 'main'"))
        peer = Librarian(
            name="peer-b",
            url="http://127.0.0.1:9",
            remote_user="bench-site",
            encrypted_password=b"not-a-password",
            mover="local",
            transfers_enabled=True,
            clone_high_water_file_id=held,
        )
        session.add(peer)
        session.flush()
        peer_id = int(peer.id)
    for lo in range(1, files + 1, CHUNK):
        hi = min(lo + CHUNK - 1, files)
        with catalogue.session() as session:
            session.execute(text(_FILES[backend]), {"lo": lo, "hi": hi, "created": created})
            session.execute(text(_INSTANCES), {"lo": lo, "hi": hi, "store": store, "yes": True})
            if lo <= held:
                top = min(hi, held)
                session.execute(text(_REMOTES), {"lo": lo, "hi": top, "peer": peer_id})
    with catalogue.engine.connect() as connection:
        if backend == "postgresql":  # what autovacuum does soon after a bulk load
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return peer_id


def reset_clone_state(catalogue: Any, peer_id: int, mark: int) -> None:
    """Forget every batch and outgoing transfer; the peer's mark back to ``mark``."""
    with catalogue.session() as session:
        session.execute(text("DELETE FROM outgoing_transfers"))
        session.execute(text("DELETE FROM transfer_batches"))
        peer = session.get(Librarian, peer_id)
        assert peer is not None
        peer.clone_high_water_file_id = mark


def advance_batches(catalogue: Any) -> int:
    """What clone_batch runs do between ticks, in one statement: every batch not yet at its
    mover is given a task (``ongoing``), so the next tick may form more (the sensor forms at
    most ``max_batches_per_tick`` while that many wait for their peer or a slot)."""
    now = datetime.datetime.now(UTC)
    with catalogue.session() as session:
        moved = session.execute(
            text(
                "UPDATE transfer_batches SET status = 'ongoing', task_id = 'bench-' || id, "
                "submitted_at = :now WHERE status IN ('initiated', 'staged', 'submitting')"
            ),
            {"now": now},
        ).rowcount
        session.execute(
            text("UPDATE outgoing_transfers SET status = 'ongoing' WHERE status = 'initiated'")
        )
    return int(moved or 0)


def table_counts(catalogue: Any) -> dict[str, int]:
    with catalogue.session() as session:
        return {
            name: int(session.scalar(text(f"SELECT count(*) FROM {name}")) or 0)
            for name in ("outgoing_transfers", "transfer_batches")
        }


def peer_mark(catalogue: Any, peer_id: int) -> int:
    with catalogue.session() as session:
        return int(
            session.scalar(
                select(Librarian.clone_high_water_file_id).where(Librarian.id == peer_id)
            )
        )


NAIVE = {  # the anti-join the sensor avoids: every file the peer lacks, over all files
    "naive NOT EXISTS, first LIMIT": (
        "SELECT f.id, f.size, f.created_at FROM files f WHERE NOT EXISTS (SELECT 1 FROM "
        "remote_instances r WHERE r.file_id = f.id AND r.librarian_id = :peer) AND NOT EXISTS "
        "(SELECT 1 FROM outgoing_transfers o WHERE o.file_id = f.id AND o.librarian_id = :peer "
        "AND o.status IN ('initiated', 'ongoing', 'staged')) ORDER BY f.id LIMIT :limit"
    ),
    "naive LEFT JOIN ... IS NULL, first LIMIT": (
        "SELECT f.id, f.size, f.created_at FROM files f LEFT JOIN remote_instances r ON "
        "r.file_id = f.id AND r.librarian_id = :peer LEFT JOIN outgoing_transfers o ON "
        "o.file_id = f.id AND o.librarian_id = :peer AND o.status IN ('initiated', 'ongoing', "
        "'staged') WHERE r.id IS NULL AND o.id IS NULL ORDER BY f.id LIMIT :limit"
    ),
    "naive NOT EXISTS, all waiting (no row cap)": (
        "SELECT f.id, f.size, f.created_at FROM files f WHERE NOT EXISTS (SELECT 1 FROM "
        "remote_instances r WHERE r.file_id = f.id AND r.librarian_id = :peer) AND NOT EXISTS "
        "(SELECT 1 FROM outgoing_transfers o WHERE o.file_id = f.id AND o.librarian_id = :peer "
        "AND o.status IN ('initiated', 'ongoing', 'staged')) ORDER BY f.id"
    ),
}
BARE = "SELECT id, size, created_at FROM files WHERE id > :mark ORDER BY id LIMIT :limit"


def query_plan(catalogue: Any, backend: str, sql: str, params: dict[str, Any]) -> list[str]:
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with catalogue.session() as session:
        rows = session.execute(text(explain + sql), params).all()
    return [" ".join(str(c) for c in row) if backend == "sqlite" else str(row[0]) for row in rows]


# -- one 1,024-book batch's catalogue work, in process (no Dagster, no HTTP) ----------------------


class StubMover:
    """A mover that takes a task and copies nothing: the copy is timed on its own."""

    name = "local"

    def __init__(self) -> None:
        self.items: list[Any] = []

    def address(self, path: Path | str) -> str:
        return str(path)

    def new_submission_id(self) -> str:
        return "0" * 32

    def submit(self, items: Sequence[Any], **_: Any) -> str:
        self.items = list(items)
        return "0" * 32


def offline_batch_costs(root: Path, books: int, seed: int) -> dict[str, float]:
    """Seconds of each step one batch of ``books`` books takes on SQLite, calling the services
    the sensor, runs and routes call (``tests.clone_helpers`` builds the two librarians)."""
    import importlib

    from sqlalchemy import insert

    from librarian_dagster.catalogue.models import CallbackOutbox, File, Instance, Store
    from librarian_dagster.services import clones_batch, clones_callbacks, outbox_delivery
    from librarian_dagster.services.clones import form_batches
    from librarian_dagster.services.clones_incoming import stage_clones
    from librarian_dagster.services.clones_settle import settle
    from librarian_dagster.services.ingest import ingest_transfer
    from librarian_dagster.services.peers import get_peer
    from librarian_dagster.storage.movers.protocol import ItemResult, TaskReport, TaskStatus
    from librarian_dagster.storage.tree import tree_size
    from librarian_dagster.wire import CloneComplete
    from librarian_dagster.wire.clones import CLONES_COMPLETE
    from tests.clone_helpers import befriend_both, clone_sites, links_for

    times: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(label: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        times[label] = round(time.perf_counter() - start, 4)

    transfer = {"batch_min": 128, "batch_max": books, "batch_max_wait_seconds": 0}
    with clone_sites(root / "sites", ["site-a", "site-b"], **transfer) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        pairs = small_books(root / "books", books, seed)
        old = datetime.datetime(2024, 1, 1, tzinfo=UTC)
        with a.catalogue.session() as session:
            store_id = session.scalar(select(Store.id).where(Store.name == "main"))
            files = [
                {
                    "id": i + 1,
                    "name": name,
                    "size": tree_size(path) or 0,
                    "checksum": str(hash_path(path)),
                    "is_directory": path.is_dir(),
                    "uploader": "alice",
                    "source": "site-a",
                    "created_at": old,
                }
                for i, (path, name) in enumerate(pairs)
            ]
            session.execute(insert(File), files)
            session.execute(
                insert(Instance),
                [
                    {"file_id": i + 1, "store_id": store_id, "path": str(path), "available": True}
                    for i, (path, _) in enumerate(pairs)
                ],
            )
        with timed("A: form_batches (the clone sensor's catalogue work)"):
            (formed,) = form_batches(a.catalogue, a.settings)
        batch_id = formed.batch_id
        outcome = clones_batch.BatchOutcome(batch_id, "site-b", "over")
        # The stage step's halves (they moved from clones_batch to clones_stage once already).
        stage_module = next(
            module
            for name in ("clones_stage", "clones_batch")
            if hasattr(
                module := importlib.import_module(f"librarian_dagster.services.{name}"),
                "_record_answers",
            )
        )
        with timed("A: build the stage request"), a.catalogue.session() as session:
            request = stage_module._stage_request(
                session, clones_batch.batch_row(session, batch_id)
            )
        assert request is not None and len(request.items) == books
        with timed("B: stage_clones (rows + staging directories)"), b.catalogue.session() as s:
            response = stage_clones(s, b.settings, b.stores, get_peer(s, "site-a"), request)
        with timed("A: record the stage answers"), a.catalogue.session() as session:
            batch = clones_batch.batch_row(session, batch_id, lock=True)
            stage_module._record_answers(session, a.settings, batch, response, outcome)
        mover = StubMover()
        with timed("A: submit (slot, source paths, ongoing)"):
            clones_batch.submit(a.catalogue, a.settings, mover, batch_id, outcome)  # type: ignore[arg-type]
        results = []
        with timed("mover: copy_and_hash of every book (the worker's work, no catalogue)"):
            for item in mover.items:
                checksum = copy_and_hash(item.source, item.destination)
                results.append(ItemResult(item, done=True, checksum=str(checksum)))
        report = TaskReport("0" * 32, TaskStatus.SUCCEEDED, tuple(results))
        with timed("A: settle (staged, outbox row)"):
            settle(a.catalogue, a.settings, report, batch_id, outcome)
        with a.catalogue.session() as session:
            ids = session.get(CallbackOutbox, outcome.callbacks[0]).payload["transfer_ids"]
        with timed("B: mark_staged"), b.catalogue.session() as session:
            clones_callbacks.mark_staged(session, get_peer(session, "site-a"), ids)
        with timed("B: ingest_transfer of every book (verify, seal, store, record, outbox)"):
            for transfer_id in ids:
                done = ingest_transfer(
                    b.catalogue,
                    b.stores,
                    transfer_id,
                    run_id="bench",
                    run_is_active=lambda _: False,
                    settings=b.settings,
                )
                assert done.status == "stored", done
        with b.catalogue.session() as session:
            owed = session.scalars(
                select(CallbackOutbox).where(CallbackOutbox.route == CLONES_COMPLETE)
            ).all()
            complete = CloneComplete(
                transfers=[t for row in owed for t in row.payload["transfers"]]
            )
        with timed("A: complete_clones (remote instances)"), a.catalogue.session() as session:
            acks = clones_callbacks.complete_clones(session, get_peer(session, "site-b"), complete)
        assert [ack.result for ack in acks.items] == ["recorded"] * books
        delivered = 0
        with timed("B: deliver the outbox over HTTP (A answers 'already')"):
            while taken := outbox_delivery.deliver(b.catalogue, b.settings, links_for(sites)):
                if not taken.taken:
                    break
                delivered += taken.delivered
        assert delivered == books, delivered
    return times


# -- the tick's queries, and where a tick's time goes ------------------------------------------

BOUNDED_EXISTS = (  # a reference, not the library's: the bounded range with EXISTS columns
    "SELECT f.id, f.size, f.created_at, EXISTS (SELECT 1 FROM remote_instances r WHERE "
    "r.file_id = f.id AND r.librarian_id = :peer) AS held, EXISTS (SELECT 1 FROM "
    "outgoing_transfers o WHERE o.file_id = f.id AND o.librarian_id = :peer AND o.status IN "
    "('initiated', 'ongoing', 'staged')) AS in_flight, EXISTS (SELECT 1 FROM instances i "
    "WHERE i.file_id = f.id AND i.available) AS here FROM files f WHERE f.id > :mark "
    "ORDER BY f.id LIMIT :limit"
)


def time_queries(
    catalogue: Any, backend: str, peer_id: int, mark: int, repeats: int, limit: int
) -> dict[str, Any]:
    """The sensor's bounded look-up, the anti-join it replaces and two references (one
    bounded query; the 4,096 rows of a tick inserted with Core), interleaved, same data."""
    from sqlalchemy import delete, insert

    from librarian_dagster.catalogue.models import OutgoingTransfer
    from librarian_dagster.services.clones import _fresh

    extra = []  # the private helper's signature has changed while this was written
    if "visible_before" in inspect.signature(_fresh).parameters:
        extra.append(datetime.datetime.now(UTC) - datetime.timedelta(seconds=30))

    def library_fresh() -> int:
        with catalogue.session() as session:
            found = _fresh(session, session.get(Librarian, peer_id), limit, *extra)
            lists = found if isinstance(found, tuple) else vars(found).values()
            return sum(len(rows) for rows in lists)  # candidates, passed over, no copy

    def sql(statement: str) -> Callable[[], int]:
        def run() -> int:
            with catalogue.session() as session:
                params = {"peer": peer_id, "mark": mark, "limit": limit}
                return len(session.execute(text(statement), params).all())

        return run

    def core_insert() -> int:
        now = datetime.datetime.now(UTC)
        rows = [
            {"file_id": mark + i, "librarian_id": peer_id, "status": "initiated", "attempts": 0}
            | {"created_at": now, "updated_at": now}
            for i in range(1, limit)
        ]
        with catalogue.session() as session:
            session.execute(insert(OutgoingTransfer), rows)
        return len(rows)

    queries: dict[str, Callable[[], int]] = {
        "the sensor's look-up (`_fresh`: LIMIT rows, 3 EXISTS each, ORM session)": library_fresh,
        "bare: files above the mark, first LIMIT": sql(BARE),
        "reference: one bounded query with 3 EXISTS columns, LIMIT rows": sql(BOUNDED_EXISTS),
        **{label: sql(statement) for label, statement in NAIVE.items()},
        "reference: insert LIMIT - 1 outgoing rows with Core executemany + commit": (core_insert),
    }
    times: dict[str, list[float]] = {label: [] for label in queries}
    rows = {}
    for _ in range(repeats + 1):  # the first round is reported as cold
        for label, run in queries.items():
            start = time.perf_counter()
            rows[label] = run()
            times[label].append(time.perf_counter() - start)
            with catalogue.session() as session:
                session.execute(delete(OutgoingTransfer))
    found: dict[str, Any] = {
        label: {
            "rows": rows[label],
            "cold_s": round(values[0], 4),
            "median_s": round(statistics.median(values[1:]), 4),
            "max_s": round(max(values[1:]), 4),
        }
        for label, values in times.items()
    }
    found = {
        label.replace("LIMIT - 1", f"{limit - 1:,}").replace("LIMIT", f"{limit:,}"): value
        for label, value in found.items()
    }
    first = NAIVE[next(iter(NAIVE))]
    found["naive plan"] = query_plan(catalogue, backend, first, {"peer": peer_id, "limit": limit})
    return found


PROFILED = {  # function name -> where it is defined (cumulative seconds in a profile)
    "clone_sensor": "librarian_dagster",
    "form_batches": "librarian_dagster",
    "_fresh": "librarian_dagster",
    "_waiting": "librarian_dagster",
    "_plan": "librarian_dagster",
    "batches_due": "librarian_dagster",
    "mover_slots": "librarian_dagster",
    "lease": "librarian_dagster",
    "flush": "sqlalchemy/orm/session.py",
    "commit": "sqlalchemy/orm/session.py",
    "process_bind_param": "librarian_dagster/catalogue/columns.py",
    "_query2pg_nocache": "psycopg/_queries.py",
}


def profile_breakdown(profiler: Any) -> dict[str, float]:
    import pstats

    found: dict[str, float] = {}
    for (file, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if PROFILED.get(name, "\0") in file:
            found[name] = round(found.get(name, 0.0) + cumulative, 4)
    return found
