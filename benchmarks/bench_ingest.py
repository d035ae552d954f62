"""Benchmark uploads end to end on a live librarian: client, API, Dagster run, store.

Starts one real librarian (``tests.live.LiveLibrarian``: ``librarian init`` + ``librarian
serve``, SQLite catalogue and SQLite Dagster storage, free loopback ports) under
``benchmarks/work/``, with ``[ingest] commit_runs`` set by ``--commit-runs`` (``api``, the
default: the runs asked for at commit execute inside the API process; ``queue``: they go
through Dagster's run queue to a run worker process), makes a ``read_append`` user through
the API and measures:

a. one large file (default 4 GiB, in the page cache): ``client.upload(file, name)`` over the
   shared filesystem against ``cp`` of the same file onto the store's filesystem plus an
   xxh3_128 ``hash_path`` of the copy (the goal's baseline), interleaved in a rotating order,
   each after the same untimed ``cp`` + delete (see ``reset_memory``), best of ``--repeats``.
   Also timed in the same rotation: ``cp`` + fsync + hash (the durable baseline), the
   client's mover ``copy_and_hash`` alone exactly as the client calls it (``fsync=False``),
   and the disk's raw write speed (``dd ... oflag=direct`` of the same file). The upload is
   split into phases from the client's own requests, a timing wrapper around the client's
   ``copy_and_hash``, the Dagster run's event log, an inotify watch on the staging directory
   (the ``fchmod`` that starts sealing, after the server's verify) and the stored file's
   inode ctime (set by the rename into the store, after the seal's fsync), see
   ``upload_phases``;
b. sequential 1 KiB uploads (after warm-ups) done step by step with the client's
   ``request`` and ``copy_and_hash`` and a 20 ms status poll: p50/p95 of commit -> stored,
   and of the whole upload; then a few plain ``client.upload`` calls (the client's own
   back-off poll) for the total a user sees;
c. many 1 KiB files in one ``client.upload_many`` call, then the same through the CLI
   (``librarian upload f1 ... fN DEST/`` with a client config file);
d. a directory book of many 10 KiB files: ``client.upload(dir, name)``.

Times across processes are wall-clock (``time.time()``: Dagster event timestamps and inode
ctimes use the same clock). Everything under the work directory is removed at the end.
Results go to ``results/ingest.json`` (``--commit-runs api``) or ``results/ingest-queue.json``
(``queue``); a partial run (``--only``) keeps the other parts' last numbers of the same file.

Usage: python benchmarks/bench_ingest.py [--commit-runs api|queue] [--only a,b,c,d]
       [--size-gib 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import itertools
import json
import math
import os
import platform
import select
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests.live, when run as a script from anywhere

from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.stats import percentile, r3  # noqa: E402
from librarian_dagster.client import LibrarianClient  # noqa: E402
from librarian_dagster.client import uploads as client_uploads  # noqa: E402
from librarian_dagster.jobs.names import API_EXECUTOR, EXECUTOR_TAG, INGEST_JOB, INGEST_OP  # noqa: E402
from librarian_dagster.storage.checksums import hash_path  # noqa: E402
from librarian_dagster.storage.movers.copy import copy_and_hash  # noqa: E402
from librarian_dagster.storage.posix import remove_if_present  # noqa: E402
from tests.live import ADMIN_PASSWORD, LiveLibrarian  # noqa: E402

WORK = HERE / "work"
RESULTS = {  # --commit-runs: results file (each keeps its own parts across --only runs)
    "api": HERE / "results" / "ingest.json",
    "queue": HERE / "results" / "ingest-queue.json",
}
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 64 * MIB  # one random block, repeated: random enough for hashes and cp
POLL = 0.02
USER, PASSWORD = "bench", "password-bench"
GOALS = {  # part: (description, limit, unit)
    "a": ("large file: upload / (cp + hash) <= 1.5", 1.5, "ratio"),
    "b": ("1 KiB uploads: commit -> stored p50 <= 3 s", 3.0, "s"),
    "c": ("500 x 1 KiB in one upload_many <= 40 s", 40.0, "s"),
    "d": ("directory book of 1,000 x 10 KiB <= 2 s", 2.0, "s"),
}
TERMINAL = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


# -- small helpers -----------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "min": r3(min(values)),
        "p50": r3(statistics.median(values)),
        "p95": r3(percentile(values, 95)),
        "max": r3(max(values)),
        "mean": r3(statistics.fmean(values)),
    }


def cached_fraction(path: Path) -> float | None:
    """How much of ``path`` is in the page cache (util-linux ``fincore``), 0..1."""
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        size = path.stat().st_size
        return round(int(out[0]) / size, 3) if size else 1.0
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def make_random_file(path: Path, size: int) -> None:
    block = os.urandom(min(BLOCK, size))
    with open(path, "wb") as out:
        for offset in range(0, size, BLOCK):
            out.write(block[: size - offset])


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the instrumented client ---------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    start: float
    end: float
    status: str | None = None  # upload status in a GET /uploads/{id} answer


class TimedClient(LibrarianClient):
    """The real client; every API call is logged with wall-clock start and end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[Call] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        start = time.time()
        response = super().request(method, path, **kwargs)
        call = Call(method, path, start, time.time())
        if method == "GET" and path.startswith("/uploads/"):
            call.status = response.json().get("status")
        self.calls.append(call)
        return response

    def since(self, moment: float) -> list[Call]:
        return [call for call in self.calls if call.start >= moment]


class StagingWatch:
    """inotify on one staging directory: wall-clock times of its entries' attribute changes
    (``IN_ATTRIB``: the server's ``fchmod`` that starts sealing a file book) and renames out
    (``IN_MOVED_FROM``: the move into the store).

    A thread reads the events as they come, so the times are the events' times to within a
    few milliseconds. Only a staged *file* is seen this way; the files inside a directory
    book are not watched (their ctimes are used instead, see ``upload_phases``).
    """

    _IN_ATTRIB, _IN_MOVED_FROM, _IN_NONBLOCK, _IN_CLOEXEC = 0x4, 0x40, 0o4000, 0o2000000
    _HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len

    def __init__(self, directory: Path) -> None:
        self.events: list[tuple[float, str, str]] = []  # (time, "attrib" | "moved", name)
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(self._IN_NONBLOCK | self._IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self._IN_ATTRIB | self._IN_MOVED_FROM
        if libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="staging-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._fd], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            now = time.time()
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = self._HEADER.unpack_from(data, offset)
                offset += self._HEADER.size
                name = data[offset : offset + length].rstrip(b"\0").decode(errors="replace")
                offset += length
                if mask & self._IN_ATTRIB:
                    self.events.append((now, "attrib", name))
                if mask & self._IN_MOVED_FROM:
                    self.events.append((now, "moved", name))

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            os.close(self._fd)

    def first(self, kind: str, name: str, after: float) -> float | None:
        return next((t for t, k, n in self.events if k == kind and n == name and t >= after), None)


@dataclass
class CopyLog:
    """The client's ``copy_and_hash`` calls: (start, end, destination) and staging watches."""

    spans: list[tuple[float, float, Path]] = field(default_factory=list)
    watches: list[StagingWatch] = field(default_factory=list)

    def total(self) -> float:
        return sum(end - start for start, end, _ in self.spans)

    def close(self) -> None:
        for watch in self.watches:
            watch.close()


@contextlib.contextmanager
def timed_copies(watch: bool = False) -> Iterator[CopyLog]:
    """Time the client's ``copy_and_hash`` (the shared-filesystem mover) per call.

    With ``watch``, a ``StagingWatch`` on each destination's directory (started before the
    copy; ``upload_phases`` reads and closes it) times the server's sealing.
    """
    log = CopyLog()
    original = client_uploads.copy_and_hash

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        destination = Path(args[1] if len(args) > 1 else kwargs["dst"])
        if watch:
            log.watches.append(StagingWatch(destination.parent))
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            log.spans.append((start, time.time(), destination))

    client_uploads.copy_and_hash = wrapper
    try:
        yield log
    finally:
        client_uploads.copy_and_hash = original


def dirty_mib() -> dict[str, int]:
    """Dirty and under-writeback page cache (``/proc/meminfo``), MiB: what fsync waits for."""
    found = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            if key in ("Dirty", "Writeback"):
                found[key.lower()] = int(rest.split()[0]) // 1024
    return found


def reset_memory(src: Path, scratch: Path) -> None:
    """Put the page cache in the same state before every timed operation of part a.

    On this VM how fast a copy fills new page-cache memory depends on what ran and was freed
    just before (two copies with the same 512 KiB writes took 3.7-4.0 s and 5.6-8.1 s for
    4 GiB by their places in a fixed order): every timed operation follows the same untimed
    ``cp`` + delete instead.
    """
    subprocess.run(["cp", str(src), str(scratch)], check=True)
    os.sync()
    scratch.unlink()
    os.sync()
    time.sleep(1)


# -- Dagster runs --------------------------------------------------------------------------


@dataclass
class RunTimeline:
    """One ingest run, from its event log (wall-clock seconds)."""

    run_id: str
    status: str
    transfer_ids: list[int]
    create_timestamp: float  # run storage row; whole seconds on SQLite
    api: bool = False  # executed inside the API process (tag librarian/executor=api)
    first_event: float | None = None  # the run's first event (ENQUEUED, or START for API runs)
    enqueued: float | None = None  # RUN_ENQUEUED: submitted and queued (queue runs only)
    starting: float | None = None  # RUN_STARTING: the daemon dequeued it (queue runs only)
    worker: float | None = None  # first ENGINE_EVENT after STARTING: run worker process up
    started: float | None = None  # RUN_START: the job is executing (worker or API process)
    step_start: float | None = None
    ended: float | None = None  # RUN_SUCCESS / RUN_FAILURE
    stored_log: dict[str, float] = field(default_factory=dict)  # name -> "stored NAME" log
    seconds: dict[str, float] = field(default_factory=dict)  # name -> materialization seconds

    def phases(self) -> dict[str, float | None]:
        """(enqueued -> starting ->) started -> step -> ... -> ended, in seconds.

        Queue and worker phases are None for API runs: they have neither, and their first
        event is RUN_START (the run record is created in the API process just before).
        """
        last_stored = max(self.stored_log.values(), default=None)
        return {
            "queue (enqueued -> starting)": span(self.enqueued, self.starting),
            "worker process (starting -> started)": span(self.starting, self.started),
            "  of which: spawn -> first worker event": span(self.starting, self.worker),
            "started -> step start": span(self.started, self.step_start),
            "step start -> last stored": span(self.step_start, last_stored),
            "last stored -> run end": span(last_stored, self.ended),
            "whole run (first event -> end)": span(self.first_event, self.ended),
        }


def span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def read_run(instance: dg.DagsterInstance, record: Any) -> RunTimeline:
    run = record.dagster_run
    config = run.run_config.get("ops", {}).get(INGEST_OP, {}).get("config", {})
    timeline = RunTimeline(
        run.run_id,
        run.status.value,
        list(config.get("transfer_ids", [])),
        record.create_timestamp.timestamp(),
        api=run.tags.get(EXECUTOR_TAG) == API_EXECUTOR,
    )
    kinds = dg.DagsterEventType
    for entry in instance.all_logs(run.run_id):
        kind = entry.dagster_event_type
        t = entry.timestamp
        if timeline.first_event is None:
            timeline.first_event = t
        if kind == kinds.RUN_ENQUEUED and timeline.enqueued is None:
            timeline.enqueued = t
        elif kind == kinds.RUN_STARTING and timeline.starting is None:
            timeline.starting = t
        elif kind == kinds.ENGINE_EVENT and timeline.starting and timeline.worker is None:
            timeline.worker = t
        elif kind == kinds.RUN_START:
            timeline.started = t
        elif kind == kinds.STEP_START and timeline.step_start is None:
            timeline.step_start = t
        elif kind in (kinds.RUN_SUCCESS, kinds.RUN_FAILURE, kinds.RUN_CANCELED):
            timeline.ended = t
        elif kind == kinds.ASSET_MATERIALIZATION and entry.dagster_event is not None:
            materialization = entry.dagster_event.step_materialization_data.materialization
            value = materialization.metadata.get("seconds")
            if materialization.partition and value is not None:
                timeline.seconds[materialization.partition] = float(value.value)
        elif kind is None and entry.user_message.startswith("stored "):
            message = entry.user_message
            timeline.stored_log[message[len("stored ") : message.rindex(" (")]] = t
    return timeline


class Runs:
    """Ingest runs on the live site's Dagster instance, read after the fact."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def for_transfers(
        self, transfer_ids: Sequence[int], since: float, timeout: float = 600.0
    ) -> dict[int, RunTimeline]:
        """The (finished) run that handled each transfer; waits for runs to finish."""
        wanted = set(transfer_ids)
        deadline = time.monotonic() + timeout
        created_after = datetime.datetime.fromtimestamp(since - 2, datetime.UTC)
        while True:
            records = self.instance.get_run_records(
                dg.RunsFilter(job_name=INGEST_JOB, created_after=created_after)
            )
            mine = [
                record for record in records if wanted & set(self._transfer_ids(record.dagster_run))
            ]
            done = all(record.dagster_run.status in TERMINAL for record in mine)
            covered = set().union(*(self._transfer_ids(r.dagster_run) for r in mine))
            if (done and wanted <= covered) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        found: dict[int, RunTimeline] = {}
        # Oldest first, so a later run that skipped a book does not hide the one that stored it.
        for record in sorted(mine, key=lambda r: r.create_timestamp):
            timeline = read_run(self.instance, record)
            for transfer_id in timeline.transfer_ids:
                if transfer_id in wanted and transfer_id not in found:
                    found[transfer_id] = timeline
        return found

    @staticmethod
    def _transfer_ids(run: dg.DagsterRun) -> list[int]:
        config = run.run_config.get("ops", {}).get(INGEST_OP, {}).get("config", {})
        return list(config.get("transfer_ids", []))


def event_table(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One run's event log, relative to its first event: for the JSON, to show one example."""
    rows: list[str] = []
    first: float | None = None
    for entry in instance.all_logs(run_id):
        first = first if first is not None else entry.timestamp
        kind = entry.dagster_event_type.value if entry.dagster_event_type else "LOG"
        message = entry.user_message or (
            entry.dagster_event.message if entry.dagster_event is not None else ""
        )
        rows.append(f"{entry.timestamp - first:7.3f} {kind} {(message or '')[:90]}")
    return rows


# -- the site ------------------------------------------------------------------------------


@dataclass
class Bench:
    work: Path
    live: LiveLibrarian
    client: TimedClient
    runs: Runs
    first_upload: float = 0.0

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def store_root(self) -> Path:
        return self.live.directory / "stores" / "main"

    def stored_path(self, name: str) -> Path:
        (instance,) = self.client.get_file(name).instances
        return Path(instance.path)


@contextlib.contextmanager
def live_site(work: Path, commit_runs: str) -> Iterator[Bench]:
    live = LiveLibrarian(work / "site", extra_config=["[ingest]", f'commit_runs = "{commit_runs}"'])
    live.directory.mkdir(parents=True)
    started = time.monotonic()
    try:  # stop() also after a failed start(): serve may be up with a broken API
        live.start()
        print(f"librarian serve up in {time.monotonic() - started:.1f} s ({live.api_url})")
        response = httpx.post(
            f"{live.api_url}/api/v2/users",
            json={"name": USER, "password": PASSWORD, "level": "read_append"},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        response.raise_for_status()
        with (
            TimedClient(live.api_url, USER, PASSWORD) as client,
            live.dagster_instance() as instance,
        ):
            bench = Bench(work, live, client, Runs(instance))
            # The first commit pays one-off costs (queue: the launcher opens its Dagster
            # instance and GraphQL client; api: whatever the start-up warm-up has not loaded
            # yet): pay them before anything is timed, and report it.
            warm = bench.data / "warm-up.bin"
            warm.write_bytes(os.urandom(KIB))
            started = time.monotonic()
            client.upload(warm, "bench/warm-up.bin", transfer="local")
            bench.first_upload = time.monotonic() - started
            print(f"first upload after start (untimed warm-up): {bench.first_upload:.2f} s")
            yield bench
    finally:
        live.stop()


# -- (a) one large file --------------------------------------------------------------------


def baseline_cp_hash(src: Path, dst: Path, fsync: bool) -> dict[str, float]:
    start = time.time()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    copied = time.time()
    if fsync:
        fsync_path(dst)
    synced = time.time()
    hash_path(dst)
    done = time.time()
    times = {"cp": copied - start, "hash": done - synced, "total": done - start}
    if fsync:
        times["fsync"] = synced - copied
    return times


def disk_write(src: Path, dst: Path) -> float:
    """Seconds to write ``src`` (in the page cache) to ``dst`` with direct I/O + fsync."""
    start = time.time()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", "bs=16M", "oflag=direct", "conv=fsync", "status=none"],
        check=True,
    )
    return time.time() - start


def store_ctime(path: Path) -> float:
    return os.lstat(path).st_ctime_ns / 1e9


def upload_phases(
    bench: Bench, name: str, wall: tuple[float, float], copies: CopyLog
) -> tuple[dict[str, float | None], RunTimeline]:
    """Split one ``client.upload`` of a single book into consecutive phases (seconds).

    Boundaries: client calls (POST /uploads, copy_and_hash, POST commit, the GET that first
    said ``stored``), the run's events, and the sealing's marks on the book. The ingest
    starts at the "stored" log line minus the materialization's ``seconds`` (claim ->
    catalogue commit). Sealing (``LocalStore.commit``) first ``fchmod``s each file and kicks
    its writeback, then fsyncs each, then renames the book into the store:

    * a file: the ``fchmod`` is the staging watch's ``IN_ATTRIB`` (needs ``timed_copies(
      watch=True)``; without it verify runs to the rename) and ends *verify*; the stored
      file's ctime (set by the rename) ends *writeback + fsync + rename*. The event is
      read a little after it happens and ctimes come from a coarse clock (ext4: a few ms
      behind), so a phase of ~0 may come out a few ms negative;
    * a directory: the earliest file ctime below it (the first ``fchmod``) ends *verify*,
      the latest ends *fchmod + kick* (pass 1), and the top directory's ctime (its chmod
      right after the rename) ends *fsync + rename*.

    Queue runs: commit answered -> RUN_ENQUEUED -> RUN_STARTING -> RUN_START. API runs have
    neither queue nor worker (those phases are None): commit answered -> RUN_START.
    """
    start, end = wall
    calls = bench.client.since(start)
    stage = next(c for c in calls if c.method == "POST" and c.path == "/uploads")
    commit = next(c for c in calls if c.method == "POST" and c.path.endswith("/commit"))
    seen = next(c for c in calls if c.status == "stored")
    upload_id = int(commit.path.split("/")[2])
    (copy_start, copy_end, staged) = copies.spans[-1]
    run = bench.runs.for_transfers([upload_id], start)[upload_id]
    stored_log = run.stored_log[name]
    ingest_start = stored_log - run.seconds[name]
    path = bench.stored_path(name)
    if path.is_dir():
        files = [store_ctime(Path(d) / f) for d, _, fs in os.walk(path) for f in fs]
        sealing = min(files, default=None)
        kicked = max(files, default=None)
        renamed = store_ctime(path)
    else:
        watch = copies.watches[-1] if copies.watches else None
        sealing = watch.first("attrib", staged.name, copy_end) if watch else None
        kicked = sealing  # one fchmod, then the kick: counted in the next phase
        renamed = store_ctime(path)
    copies.close()
    if run.api:
        assert run.started, run
    else:
        assert run.enqueued and run.starting and run.started, run
    phases: dict[str, float | None] = {
        "client: scan + stage (POST /uploads)": stage.end - start,
        "client: copy + hash (copy_and_hash, no fsync)": copy_end - copy_start,
        "client: commit request": commit.end - commit.start,
        "commit answered -> RUN_START (API run: gather gap + run creation)": (
            span(commit.end, run.started) if run.api else None
        ),
        "commit answered -> run enqueued": None if run.api else span(commit.end, run.enqueued),
        "queue (enqueued -> RUN_STARTING)": span(run.enqueued, run.starting),
        "run worker start (STARTING -> RUN_START)": span(run.starting, run.started),
        "run start -> ingest start": span(run.started, ingest_start),
        "server verify (claim + hash)": span(ingest_start, sealing or renamed),
        "seal pass 1: fchmod + writeback kick (directory files)": (
            span(sealing, kicked) if path.is_dir() else None
        ),
        "seal: writeback + fsync + rename": span(kicked, renamed),
        "catalogue record (+ dir fsync, staging removal)": stored_log - renamed,
        "client poll lag (stored -> client sees it)": seen.end - stored_log,
    }
    phases["unaccounted"] = (end - start) - sum(v for v in phases.values() if v is not None)
    phases["(info) run end after stored"] = (run.ended or stored_log) - stored_log
    phases["(info) ingest seconds (materialization)"] = run.seconds[name]
    return phases, run


def best_and_all(values: Sequence[float]) -> dict[str, Any]:
    return {
        "best": r3(min(values)),
        "median": r3(statistics.median(values)),
        "all": [r3(v) for v in values],
    }


def part_a(bench: Bench, size: int, repeats: int) -> dict[str, Any]:
    src = bench.data / "large.bin"
    dst = bench.store_root / "bench-cp.bin"  # same filesystem as staging and store
    print(f"(a) writing {size / GIB:g} GiB source file")
    make_random_file(src, size)
    os.sync()
    hash_path(src)  # read once more: the source is in the page cache
    baseline: list[dict[str, float]] = []
    baseline_fsync: list[dict[str, float]] = []
    mover: list[float] = []
    dd: list[float] = []
    uploads: list[dict[str, Any]] = []
    cache: list[dict[str, Any]] = []
    example: list[str] = []
    order = ["cp", "upload", "cp+fsync", "copy_and_hash", "dd"]
    scratch = bench.data / "reset.bin"
    algorithm = bench.client.algorithm
    for round_ in range(repeats):
        shift = round_ % len(order)
        for what in order[shift:] + order[:shift]:
            reset_memory(src, scratch)
            before = cached_fraction(src)
            record: dict[str, Any] = {"round": round_, "op": what, "source": before}
            if what == "cp":
                baseline.append(baseline_cp_hash(src, dst, fsync=False))
                record["copy before hash"] = cached_fraction(dst)
                print(f"  round {round_}: cp + hash {baseline[-1]['total']:.2f} s")
            elif what == "cp+fsync":
                baseline_fsync.append(baseline_cp_hash(src, dst, fsync=True))
                print(f"  round {round_}: cp + fsync + hash {baseline_fsync[-1]['total']:.2f} s")
            elif what == "copy_and_hash":
                # The client's mover alone, exactly as client/uploads.py calls it.
                start = time.time()
                copy_and_hash(src, dst, algorithm, None, fsync=False)
                mover.append(time.time() - start)
                print(f"  round {round_}: copy_and_hash alone {mover[-1]:.2f} s")
            elif what == "dd":
                dd.append(disk_write(src, dst))
                print(f"  round {round_}: dd oflag=direct {size / 1e6 / dd[-1]:.0f} MB/s")
            else:
                name = f"bench/large/{round_}.bin"
                with timed_copies(watch=True) as copies:
                    start = time.time()
                    bench.client.upload(src, name, transfer="local")
                    end = time.time()
                record["dirty after"] = dirty_mib()
                phases, run = upload_phases(bench, name, (start, end), copies)
                stored = bench.stored_path(name)
                record["stored copy after"] = cached_fraction(stored)
                uploads.append({"total": end - start, "phases": phases, "run_id": run.run_id})
                example = event_table(bench.runs.instance, run.run_id)
                # Free the disk and the page cache; the site is thrown away afterwards.
                stored.unlink()
                print(f"  round {round_}: upload {end - start:.2f} s")
            if what != "upload":
                record["dirty after"] = dirty_mib()
                dst.unlink()
            cache.append(record)
    best_upload = min(uploads, key=lambda u: u["total"])
    best_base = min(baseline, key=lambda b: b["total"])
    best_fsync = min(baseline_fsync, key=lambda b: b["total"])
    ratio = best_upload["total"] / best_base["total"]
    dd_mb_s = [size / 1e6 / t for t in dd]
    phases = best_upload["phases"]
    return {
        "size_bytes": size,
        "repeats": repeats,
        "order": order,
        "page_cache_and_dirty_mib": cache,
        "baseline_cp_hash": {
            "best": {k: r3(v) for k, v in best_base.items()},
            "totals": [r3(b["total"]) for b in baseline],
            "median_total": r3(statistics.median(b["total"] for b in baseline)),
        },
        "baseline_cp_fsync_hash": {
            "best": {k: r3(v) for k, v in best_fsync.items()},
            "totals": [r3(b["total"]) for b in baseline_fsync],
            "median_total": r3(statistics.median(b["total"] for b in baseline_fsync)),
            "fsync_seconds": [r3(b["fsync"]) for b in baseline_fsync],
            "cp_plus_fsync_mb_per_s": [
                round(size / 1e6 / (b["cp"] + b["fsync"])) for b in baseline_fsync
            ],
        },
        "copy_and_hash_alone": {
            "call": "copy_and_hash(src, staging, 'xxh3_128', None, fsync=False), as the client",
            **best_and_all(mover),
            "mb_per_s": [round(size / 1e6 / t) for t in mover],
        },
        "disk_write_dd_direct": {
            "command": "dd if=SRC of=DST bs=16M oflag=direct conv=fsync (SRC in the page cache)",
            "seconds": best_and_all(dd),
            "mb_per_s": [round(v) for v in dd_mb_s],
            "median_mb_per_s": round(statistics.median(dd_mb_s)),
            "max_mb_per_s": round(max(dd_mb_s)),
        },
        "upload": {
            "best_total": r3(best_upload["total"]),
            "totals": [r3(u["total"]) for u in uploads],
            "median_total": r3(statistics.median(u["total"] for u in uploads)),
            "best_phases": {k: r3(v) for k, v in phases.items()},
            "all_phases": [{k: r3(v) for k, v in u["phases"].items()} for u in uploads],
            "client_copy_mb_per_s": [
                round(size / 1e6 / u["phases"]["client: copy + hash (copy_and_hash, no fsync)"])
                for u in uploads
            ],
            "server_verify_mb_per_s": [
                round(size / 1e6 / u["phases"]["server verify (claim + hash)"]) for u in uploads
            ],
            # Seconds from sealing's fchmod to the rename: what the server's fsync waited.
            "server_seal_seconds": [
                r3(u["phases"]["seal: writeback + fsync + rename"]) for u in uploads
            ],
        },
        "ratio_upload_to_cp_hash": r3(ratio),
        "ratio_upload_to_cp_fsync_hash": r3(best_upload["total"] / best_fsync["total"]),
        "ratio_median": r3(
            statistics.median(u["total"] for u in uploads)
            / statistics.median(b["total"] for b in baseline)
        ),
        "ratio_median_to_cp_fsync_hash": r3(
            statistics.median(u["total"] for u in uploads)
            / statistics.median(b["total"] for b in baseline_fsync)
        ),
        "example_run_events": example,
        "goal_value": r3(ratio),
    }


# -- (b) sequential small uploads ----------------------------------------------------------


def one_small_upload(bench: Bench, local: Path, name: str) -> dict[str, Any]:
    """Stage, copy (copy_and_hash as the client calls it), commit, poll every 20 ms."""
    client = bench.client
    t0 = time.time()
    staged = client.request("POST", "/uploads", json={"name": name, "size": local.stat().st_size})
    info = staged.json()
    t_staged = time.time()
    checksum = copy_and_hash(local, info["staging_path"], client.algorithm, None, fsync=False)
    t_copied = time.time()
    client.request("POST", f"/uploads/{info['upload_id']}/commit", json={"checksum": str(checksum)})
    t_committed = time.time()
    while True:
        status = client.get_upload(info["upload_id"]).status.value
        if status == "stored":
            break
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"{name}: {status}")
        time.sleep(POLL)
    t_seen = time.time()
    return {
        "upload_id": info["upload_id"],
        "name": name,
        "stage": t_staged - t0,
        "copy": t_copied - t_staged,
        "commit_request": t_committed - t_copied,
        "commit_to_stored": t_seen - t_copied,
        "total": t_seen - t0,
        "t_commit_sent": t_copied,
        "t_commit_answered": t_committed,
        "t_seen": t_seen,
    }


def part_b(bench: Bench, count: int, warmups: int, client_uploads_n: int) -> dict[str, Any]:
    directory = bench.data / "singles"
    directory.mkdir()
    files = []
    for i in range(warmups + count + client_uploads_n):
        path = directory / f"single-{i:03d}.bin"
        path.write_bytes(os.urandom(KIB))
        files.append(path)
    since = time.time()
    results = []
    for i in range(warmups + count):
        result = one_small_upload(bench, files[i], f"bench/single/{i:03d}.bin")
        if i >= warmups:
            results.append(result)
        print(f"  (b) {i:2d}: commit -> stored {result['commit_to_stored']:.2f} s")
    runs = bench.runs.for_transfers([r["upload_id"] for r in results], since)
    breakdown: dict[str, list[float]] = {}
    for result in results:
        run = runs[result["upload_id"]]
        stored = run.stored_log[result["name"]]
        answered = result["t_commit_answered"]
        if run.api:
            assert run.started, run
        else:
            assert run.enqueued and run.starting and run.started, run
        parts = {
            "commit request (sent -> answered)": answered - result["t_commit_sent"],
            "commit answered -> RUN_START (API run: gather gap + run creation)": (
                span(answered, run.started) if run.api else None
            ),
            "commit answered -> run enqueued": None if run.api else span(answered, run.enqueued),
            "queue (enqueued -> RUN_STARTING)": span(run.enqueued, run.starting),
            "run worker start (STARTING -> RUN_START)": span(run.starting, run.started),
            "run start -> stored (step, claim, verify, seal, rename, record)": span(
                run.started, stored
            ),
            "stored -> client sees it (20 ms poll)": result["t_seen"] - stored,
        }
        for key, value in parts.items():
            values = breakdown.setdefault(key, [])
            if value is not None:
                values.append(value)
    example = event_table(bench.runs.instance, runs[results[len(results) // 2]["upload_id"]].run_id)
    # Plain client.upload: includes its back-off poll (0.05 s growing x1.5 to 1 s).
    plain = []
    for i in range(client_uploads_n):
        start = time.time()
        bench.client.upload(files[warmups + count + i], f"bench/single-client/{i:03d}.bin")
        plain.append(time.time() - start)
        print(f"  (b) client.upload {i}: {plain[-1]:.2f} s")
    commit_to_stored = [r["commit_to_stored"] for r in results]
    return {
        "warmups": warmups,
        "count": count,
        "poll_seconds": POLL,
        "commit_to_stored": summary(commit_to_stored),
        "total_per_upload": summary([r["total"] for r in results]),
        "client_side": {
            key: summary([r[key] for r in results]) for key in ("stage", "copy", "commit_request")
        },
        # None: the phase does not exist for these runs (queue phases of API runs).
        "commit_to_stored_breakdown": {
            key: summary(v) if v else None for key, v in breakdown.items()
        },
        "api_runs": sum(1 for r in results if runs[r["upload_id"]].api),
        "client_upload_total": summary(plain) if plain else None,
        "runs": len({runs[r["upload_id"]].run_id for r in results}),
        "example_run_events": example,
        "goal_value": r3(statistics.median(commit_to_stored)),
    }


# -- (c) many small files in one call ------------------------------------------------------


def many_runs_summary(runs: dict[int, RunTimeline], since: float, end: float) -> dict[str, Any]:
    unique = {run.run_id: run for run in runs.values()}.values()
    books = [len(run.transfer_ids) for run in unique]
    phases: dict[str, list[float]] = {}
    for run in unique:
        for key, value in run.phases().items():
            if value is not None:
                phases[key] = [*phases.get(key, []), value]
    # Per book inside a run: ingest_transfer itself (claim -> catalogue record, the
    # materialization's ``seconds``) and the spacing of consecutive "stored" log lines (that
    # plus Dagster's own log and materialization events).
    ingest = [seconds for run in unique for seconds in run.seconds.values()]
    spacing = [
        b - a for run in unique for a, b in itertools.pairwise(sorted(run.stored_log.values()))
    ]
    return {
        "runs": len(books),
        "books_per_run": summary(books) if books else None,
        "per_book_ingest_seconds": summary(ingest) if ingest else None,
        "per_book_spacing_in_run": summary(spacing) if spacing else None,
        "first_run_event_after_start": r3(min(r.first_event or end for r in unique) - since),
        "api_runs": sum(1 for run in unique if run.api),
        "last_run_end_after_start": r3(max(r.ended or end for r in unique) - since),
        "run_phases": {key: summary(values) for key, values in phases.items()},
        "statuses": sorted({run.status for run in unique}),
    }


def part_c(bench: Bench, count: int, cli: bool) -> dict[str, Any]:
    directory = bench.data / "many"
    directory.mkdir()
    files = []
    for i in range(count):
        path = directory / f"f{i:04d}.bin"
        path.write_bytes(os.urandom(KIB))
        files.append(path)
    os.sync()
    pairs = [(path, f"bench/many/{path.name}") for path in files]
    with timed_copies() as copies:
        start = time.time()
        infos = bench.client.upload_many(pairs, transfer="local")
        end = time.time()
    assert all(info.status.value == "stored" for info in infos)
    calls = bench.client.since(start)
    stages = [c for c in calls if c.method == "POST" and c.path == "/uploads"]
    commits = [c for c in calls if c.path.endswith("/commit")]
    polls = [c for c in calls if c.path == "/uploads/status"]
    runs = bench.runs.for_transfers([info.upload_id for info in infos], start)
    last_stored = max(max(run.stored_log.values()) for run in runs.values())
    first_commit = commits[0].start
    result: dict[str, Any] = {
        "count": count,
        "total": r3(end - start),
        "phases": {
            "scan + stage all (POST /uploads x N)": r3(stages[-1].end - start),
            "copy + commit all": r3(commits[-1].end - stages[-1].end),
            "  of which copy_and_hash": r3(copies.total()),
            "  of which commit requests": r3(sum(c.end - c.start for c in commits)),
            "wait (last commit -> all stored seen)": r3(end - commits[-1].end),
            "(info) first commit -> last book stored (server)": r3(last_stored - first_commit),
            "(info) last stored -> client sees it": r3(end - last_stored),
        },
        "requests": {
            "stage": summary([c.end - c.start for c in stages]),
            "commit": summary([c.end - c.start for c in commits]),
            "status_polls": len(polls),
        },
        "dagster": many_runs_summary(runs, start, end),
        "goal_value": r3(end - start),
    }
    if cli:
        result["cli"] = run_cli(bench, files)
    return result


def run_cli(bench: Bench, files: list[Path]) -> dict[str, Any]:
    config = bench.work / "client.toml"
    config.write_text(
        "[connections.bench]\n"
        f'url = "{bench.live.api_url}"\n'
        f'user = "{USER}"\n'
        f'password = "{PASSWORD}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRARIAN_", "DAGSTER_"))}
    env["LIBRARIAN_CLIENT_CONFIG"] = str(config)
    command = [
        str(Path(sys.executable).parent / "librarian"),
        "upload",
        "--transfer",
        "local",
        *map(str, files),
        "bench/cli/",
    ]
    start = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - start
    started = time.time()
    subprocess.run(
        [str(Path(sys.executable).parent / "librarian"), "--help"],
        env=env,
        capture_output=True,
        check=True,
    )
    startup = time.time() - started
    stored = sum(1 for line in done.stdout.splitlines() if line.startswith("stored "))
    print(f"  (c) CLI: {wall:.1f} s, exit {done.returncode}, {stored} stored")
    return {
        "command": "librarian upload --transfer local f0000.bin ... (N files) bench/cli/",
        "total": r3(wall),
        "exit_code": done.returncode,
        "stored_lines": stored,
        "cli_startup_librarian_help": r3(startup),
        "stderr_tail": done.stderr[-500:] if done.returncode else "",
    }


# -- (d) a directory book ------------------------------------------------------------------


def part_d(bench: Bench, files: int, file_size: int, repeats: int) -> dict[str, Any]:
    uploads: list[dict[str, Any]] = []
    example: list[str] = []
    for round_ in range(repeats):
        book = bench.data / f"dirbook-{round_}"
        book.mkdir()
        for i in range(files):
            (book / f"part-{i:04d}.dat").write_bytes(os.urandom(file_size))
        os.sync()
        time.sleep(1)
        name = f"bench/dirbook/{round_}"
        with timed_copies() as copies:
            start = time.time()
            bench.client.upload(book, name, transfer="local")
            end = time.time()
        phases, run = upload_phases(bench, name, (start, end), copies)
        uploads.append({"total": end - start, "phases": phases})
        example = event_table(bench.runs.instance, run.run_id)
        print(f"  (d) round {round_}: {end - start:.2f} s")
    best = min(uploads, key=lambda u: u["total"])
    return {
        "files": files,
        "file_size": file_size,
        "repeats": repeats,
        "totals": [r3(u["total"]) for u in uploads],
        "best_total": r3(best["total"]),
        "median_total": r3(statistics.median(u["total"] for u in uploads)),
        "best_phases": {k: r3(v) for k, v in best["phases"].items()},
        "all_phases": [{k: r3(v) for k, v in u["phases"].items()} for u in uploads],
        "example_run_events": example,
        "goal_value": r3(best["total"]),
    }


# -- main ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    fstype = subprocess.run(
        ["df", "--output=fstype", str(WORK)], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dagster": dg.__version__,
        "sqlite": sqlite3.sqlite_version,
        "filesystem": fstype,
        "cp": subprocess.run(
            ["cp", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def import_times() -> dict[str, float]:
    """Best of 3 fresh interpreters: the floor under a run worker's start-up."""
    found = {}
    for label, module in (
        ("import dagster", "dagster"),
        ("import definitions", "librarian_dagster.definitions"),
    ):
        best = math.inf
        for _ in range(3):
            start = time.monotonic()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT)
            best = min(best, time.monotonic() - start)
        found[label] = round(best, 3)
    return found


def verdicts(parts: dict[str, Any]) -> dict[str, Any]:
    goals = {}
    for key, (description, limit, unit) in GOALS.items():
        if key in parts:
            value = parts[key]["goal_value"]
            goals[description] = {
                "value": value,
                "limit": limit,
                "unit": unit,
                "pass": value <= limit,
            }
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--commit-runs",
        choices=("api", "queue"),
        default="api",
        help="[ingest] commit_runs of the live librarian; queue writes results/ingest-queue.json",
    )
    parser.add_argument("--only", default="a,b,c,d", help="parts to run, e.g. b,c")
    parser.add_argument("--results", type=Path, help="results file (default: by --commit-runs)")
    parser.add_argument("--size-gib", type=float, default=4.0, help="(a) file size")
    parser.add_argument("--repeats", type=int, default=3, help="(a) and (d) repeats")
    parser.add_argument("--singles", type=int, default=30, help="(b) timed uploads")
    parser.add_argument("--warmups", type=int, default=2, help="(b) untimed uploads first")
    parser.add_argument("--client-uploads", type=int, default=10, help="(b) plain uploads")
    parser.add_argument("--many", type=int, default=500, help="(c) files in one call")
    parser.add_argument("--no-cli", action="store_true", help="(c) skip the CLI run")
    parser.add_argument("--dir-files", type=int, default=1000, help="(d) files in the book")
    args = parser.parse_args()
    only = set(args.only.split(","))
    work = WORK / f"ingest-{uuid.uuid4().hex[:8]}"
    (work / "data").mkdir(parents=True)
    load_before = os.getloadavg()[0]
    git_at_start = git_state()
    parts: dict[str, Any] = {}
    steps: dict[str, Callable[[Bench], dict[str, Any]]] = {
        "a": lambda bench: part_a(bench, int(args.size_gib * GIB), args.repeats),
        "b": lambda bench: part_b(bench, args.singles, args.warmups, args.client_uploads),
        "c": lambda bench: part_c(bench, args.many, cli=not args.no_cli),
        "d": lambda bench: part_d(bench, args.dir_files, 10 * KIB, args.repeats),
    }
    first_upload = None
    try:
        with live_site(work, args.commit_runs) as bench:
            first_upload = bench.first_upload
            for key, step in steps.items():
                if key in only:
                    load = os.getloadavg()[0]
                    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
                    parts[key] = step(bench)
                    parts[key]["run"] = {
                        "date": started,
                        "loadavg_1min": [r3(load), r3(os.getloadavg()[0])],
                        "git": git_state(),
                    }
    finally:
        remove_if_present(work)  # also through read-only books
    result = {
        # Other work on the machine skews the numbers: a 1-minute load well above what the
        # benchmark itself causes means the run was disturbed.
        "machine": {**machine(), "loadavg_1min": [load_before, os.getloadavg()[0]]},
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "site": "LiveLibrarian: SQLite catalogue, SQLite Dagster storage, one local store",
        "commit_runs": args.commit_runs,
        "git": git_at_start,
        "first_upload_after_start_seconds": r3(first_upload),
        "python_import_seconds": import_times(),
        "parts": parts,
        "goals": verdicts(parts),
    }
    results = args.results or RESULTS[args.commit_runs]
    results.parent.mkdir(exist_ok=True)
    previous = json.loads(results.read_text()) if results.exists() else {}
    if only != {"a", "b", "c", "d"} and previous.get("parts"):
        # A partial run updates its parts and keeps the others' last numbers (same mode:
        # each --commit-runs has its own file).
        result["parts"] = {**previous["parts"], **parts}
        result["goals"] = verdicts(result["parts"])
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
