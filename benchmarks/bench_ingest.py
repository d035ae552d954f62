"""Benchmark uploads end to end on a live librarian: client, API, Dagster run, store.

Starts one real librarian (``tests.live.LiveLibrarian``: ``librarian init`` + ``librarian
serve``, SQLite catalogue and SQLite Dagster storage, free loopback ports) under
``benchmarks/work/``, makes a ``read_append`` user through the API and measures:

a. one large file (default 4 GiB, in the page cache): ``client.upload(file, name)`` over the
   shared filesystem against ``cp`` of the same file onto the store's filesystem plus an
   xxh3_128 ``hash_path`` of the copy, interleaved (each after the same untimed ``cp`` +
   delete, see ``reset_memory``), best of ``--repeats``. Also timed: ``cp`` + fsync + hash,
   the client's mover ``copy_and_hash`` alone, and, as a what-if, a mover that copies with
   ``copy_file_range`` and then hashes the source, alone and inside an upload. The upload
   is split into phases from the client's own requests, a timing wrapper around the
   client's ``copy_and_hash``, the Dagster run's event log (enqueued, starting, started, the
   ``stored NAME`` log line and the book materialization's ``seconds``) and the stored
   file's inode ctime (set by the rename into the store), see ``upload_phases``;
b. sequential 1 KiB uploads (after warm-ups) done step by step with the client's
   ``request`` and ``copy_and_hash`` and a 20 ms status poll: p50/p95 of commit → stored,
   and of the whole upload; then a few plain ``client.upload`` calls (the client's own
   back-off poll) for the total a user sees;
c. many 1 KiB files in one ``client.upload_many`` call, then the same through the CLI
   (``librarian upload f1 ... fN DEST/`` with a client config file);
d. a directory book of many 10 KiB files: ``client.upload(dir, name)``.

Times across processes are wall-clock (``time.time()``: Dagster event timestamps and inode
ctimes use the same clock). Everything under the work directory is removed at the end.

Usage: python benchmarks/bench_ingest.py [--only a,b,c,d] [--size-gib 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
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

from librarian_dagster.client import LibrarianClient  # noqa: E402
from librarian_dagster.client import uploads as client_uploads  # noqa: E402
from librarian_dagster.services.ingest_requests import INGEST_JOB, INGEST_OP  # noqa: E402
from librarian_dagster.storage.checksums import (  # noqa: E402
    DEFAULT_ALGORITHM,
    Checksum,
    copy_and_hash,
    hash_path,
)
from tests.live import ADMIN_PASSWORD, LiveLibrarian  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results" / "ingest.json"
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


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 30 values is the 29th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


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


def remove_tree(path: Path) -> None:
    """rmtree that also gets through the store's read-only books."""

    def make_writable(func: Callable[..., object], target: str, _exc_info: object) -> None:
        os.chmod(os.path.dirname(target), 0o755)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o755)
        func(target)

    if path.exists():
        shutil.rmtree(path, onerror=make_writable)


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


@contextlib.contextmanager
def timed_copies(
    mover: Callable[..., Checksum] | None = None,
) -> Iterator[list[tuple[float, float]]]:
    """Time the client's ``copy_and_hash`` (the shared-filesystem mover) per call.

    ``mover`` replaces it for the duration (the what-if measurement of part a).
    """
    spans: list[tuple[float, float]] = []
    original = client_uploads.copy_and_hash
    used = mover or original

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return used(*args, **kwargs)
        finally:
            spans.append((start, time.time()))

    client_uploads.copy_and_hash = wrapper
    try:
        yield spans
    finally:
        client_uploads.copy_and_hash = original


def copy_file_range_then_hash(
    src: Path | str,
    dst: Path | str,
    algorithm: str = DEFAULT_ALGORITHM,
    progress: Callable[[int], None] | None = None,
    *,
    fsync: bool = True,
) -> Checksum:
    """What-if, not the shipped code: a file book copied in the kernel (``copy_file_range``,
    what coreutils ``cp`` does), fsynced, then the *source* hashed (``hash_path``).

    The checksum is still the source's, so the server's verify of the staged bytes stays
    end to end; the price is a second read of the source (from the page cache when the book
    fits in memory, as here). Directories go to ``copy_and_hash`` unchanged.
    """
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        return copy_and_hash(src, dst, algorithm, progress, fsync=fsync)
    with open(src, "rb", buffering=0) as source, open(dst, "xb", buffering=0) as out:
        remaining = os.fstat(source.fileno()).st_size
        while remaining > 0:
            copied = os.copy_file_range(source.fileno(), out.fileno(), min(remaining, GIB))
            if copied == 0:
                raise OSError(f"{src} shrank while being copied")
            remaining -= copied
        if fsync:
            os.fsync(out.fileno())
    if fsync:
        fsync_path(dst.parent)
    return hash_path(src, algorithm, progress)


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
    enqueued: float | None = None  # RUN_ENQUEUED: submitted and queued
    starting: float | None = None  # RUN_STARTING: the daemon dequeued and is launching it
    worker: float | None = None  # first ENGINE_EVENT after STARTING: run worker process up
    started: float | None = None  # RUN_START: the worker has loaded the job
    step_start: float | None = None
    ended: float | None = None  # RUN_SUCCESS / RUN_FAILURE
    stored_log: dict[str, float] = field(default_factory=dict)  # name -> "stored NAME" log
    seconds: dict[str, float] = field(default_factory=dict)  # name -> materialization seconds

    def phases(self) -> dict[str, float | None]:
        """enqueued -> starting -> started -> step -> ... -> ended, each in seconds."""

        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else b - a

        last_stored = max(self.stored_log.values(), default=None)
        return {
            "queue (enqueued -> starting)": span(self.enqueued, self.starting),
            "worker process (starting -> started)": span(self.starting, self.started),
            "  of which: spawn -> first worker event": span(self.starting, self.worker),
            "started -> step start": span(self.started, self.step_start),
            "step start -> last stored": span(self.step_start, last_stored),
            "last stored -> run end": span(last_stored, self.ended),
            "whole run (enqueued -> end)": span(self.enqueued, self.ended),
        }


def read_run(instance: dg.DagsterInstance, record: Any) -> RunTimeline:
    run = record.dagster_run
    config = run.run_config.get("ops", {}).get(INGEST_OP, {}).get("config", {})
    timeline = RunTimeline(
        run.run_id,
        run.status.value,
        list(config.get("transfer_ids", [])),
        record.create_timestamp.timestamp(),
    )
    kinds = dg.DagsterEventType
    for entry in instance.all_logs(run.run_id):
        kind = entry.dagster_event_type
        t = entry.timestamp
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
def live_site(work: Path) -> Iterator[Bench]:
    live = LiveLibrarian(work / "site")
    live.directory.mkdir(parents=True)
    started = time.monotonic()
    live.start()
    print(f"librarian serve up in {time.monotonic() - started:.1f} s ({live.api_url})")
    try:
        response = httpx.post(
            f"{live.api_url}/api/v2/users",
            json={"name": USER, "password": PASSWORD, "level": "read_append"},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        response.raise_for_status()
        home = live.directory / "state" / "dagster"
        with (
            TimedClient(live.api_url, USER, PASSWORD) as client,
            dg.DagsterInstance.from_config(str(home)) as instance,
        ):
            bench = Bench(work, live, client, Runs(instance))
            # The API's launcher opens its Dagster instance and GraphQL client on the first
            # commit (~1 s once): pay that before anything is timed, and report it.
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
    if fsync:
        fsync_path(dst)
    copied = time.time()
    hash_path(dst)
    done = time.time()
    return {"cp": copied - start, "hash": done - copied, "total": done - start}


def store_ctime(path: Path) -> float:
    return os.lstat(path).st_ctime_ns / 1e9


def upload_phases(
    bench: Bench, name: str, wall: tuple[float, float], copies: list[tuple[float, float]]
) -> tuple[dict[str, float | None], RunTimeline]:
    """Split one ``client.upload`` of a single book into consecutive phases.

    Boundaries: client calls (POST /uploads, copy_and_hash, POST commit, the GET that first
    said ``stored``), the run's events, and the stored book's ctime: for a file, the rename
    into the store (which sets ctime) ends *verify* (the server's streaming hash + the claim
    and sealing, which are small); for a directory, the earliest ctime below it (the first
    ``fchmod`` of sealing) ends *verify*, and the top directory's ctime (its chmod right
    after the rename) ends *seal + rename*. The ingest itself starts at the "stored" log
    line minus the materialization's ``seconds`` (claim -> catalogue commit).
    """
    start, end = wall
    calls = bench.client.since(start)
    stage = next(c for c in calls if c.method == "POST" and c.path == "/uploads")
    commit = next(c for c in calls if c.method == "POST" and c.path.endswith("/commit"))
    seen = next(c for c in calls if c.status == "stored")
    upload_id = int(commit.path.split("/")[2])
    (copy_start, copy_end) = copies[-1]
    run = bench.runs.for_transfers([upload_id], start)[upload_id]
    stored_log = run.stored_log[name]
    ingest_start = stored_log - run.seconds[name]
    path = bench.stored_path(name)
    if path.is_dir():
        below = [store_ctime(Path(d) / f) for d, ds, fs in os.walk(path) for f in ds + fs]
        verified = min(below)
        renamed = store_ctime(path)
    else:
        verified = renamed = store_ctime(path)
    assert run.enqueued and run.starting and run.started, run
    phases: dict[str, float | None] = {
        "client: scan + stage (POST /uploads)": stage.end - start,
        "client: copy + hash (copy_and_hash, fsync)": copy_end - copy_start,
        "client: commit request": commit.end - commit.start,
        "commit answered -> run enqueued": run.enqueued - commit.end,
        "queue (enqueued -> RUN_STARTING)": run.starting - run.enqueued,
        "run worker start (STARTING -> RUN_START)": run.started - run.starting,
        "run start -> ingest start": ingest_start - run.started,
        "server verify (claim + hash)": verified - ingest_start,
        "seal + rename": renamed - verified,
        "catalogue record (+ dir fsync, staging removal)": stored_log - renamed,
        "client poll lag (stored -> client sees it)": seen.end - stored_log,
    }
    phases["unaccounted"] = (end - start) - sum(v for v in phases.values() if v is not None)
    phases["(info) run end after stored"] = (run.ended or stored_log) - stored_log
    phases["(info) ingest seconds (materialization)"] = run.seconds[name]
    return phases, run


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
    mover_cfr: list[float] = []
    uploads: list[dict[str, Any]] = []
    uploads_cfr: list[dict[str, Any]] = []
    cache: list[dict[str, Any]] = []
    example: list[str] = []
    order = ["cp", "upload", "cp+fsync", "copy_and_hash", "upload*", "copy_file_range*"]
    scratch = bench.data / "reset.bin"
    for round_ in range(repeats):
        shift = round_ % len(order)
        for what in order[shift:] + order[:shift]:
            reset_memory(src, scratch)
            before = cached_fraction(src)
            if what == "cp":
                baseline.append(baseline_cp_hash(src, dst, fsync=False))
                copy_cached = cached_fraction(dst)
                dst.unlink()
                cache.append({"op": what, "source": before, "copy before hash": copy_cached})
                print(f"  round {round_}: cp + hash {baseline[-1]['total']:.2f} s")
            elif what == "cp+fsync":
                baseline_fsync.append(baseline_cp_hash(src, dst, fsync=True))
                dst.unlink()
                cache.append({"op": what, "source": before})
                print(f"  round {round_}: cp + fsync + hash {baseline_fsync[-1]['total']:.2f} s")
            elif what in ("copy_and_hash", "copy_file_range*"):
                # The client's mover alone, as the upload calls it (fsync), no server; "*" is
                # the what-if mover (copy_file_range, then hash the source).
                cfr = what.endswith("*")
                start = time.time()
                (copy_file_range_then_hash if cfr else copy_and_hash)(src, dst)
                (mover_cfr if cfr else mover).append(time.time() - start)
                dst.unlink()
                cache.append({"op": what, "source": before})
                print(f"  round {round_}: {what} alone {time.time() - start:.2f} s")
            else:
                cfr = what.endswith("*")
                name = f"bench/large/{round_}{'-copy-file-range' if cfr else ''}.bin"
                with timed_copies(copy_file_range_then_hash if cfr else None) as copies:
                    start = time.time()
                    bench.client.upload(src, name, transfer="local")
                    end = time.time()
                phases, run = upload_phases(bench, name, (start, end), copies)
                stored = bench.stored_path(name)
                cache.append(
                    {"op": what, "source": before, "stored copy after": cached_fraction(stored)}
                )
                entry = {"total": end - start, "phases": phases, "run_id": run.run_id}
                (uploads_cfr if cfr else uploads).append(entry)
                if not cfr:
                    example = event_table(bench.runs.instance, run.run_id)
                # Free the disk and the page cache; the site is thrown away afterwards.
                stored.unlink()
                print(f"  round {round_}: {what} {end - start:.2f} s")
    best_upload = min(uploads, key=lambda u: u["total"])
    best_base = min(baseline, key=lambda b: b["total"])
    best_fsync = min(baseline_fsync, key=lambda b: b["total"])
    ratio = best_upload["total"] / best_base["total"]
    return {
        "size_bytes": size,
        "repeats": repeats,
        "page_cache_fraction": cache,
        "baseline_cp_hash": {
            "best": {k: r3(v) for k, v in best_base.items()},
            "totals": [r3(b["total"]) for b in baseline],
            "median_total": r3(statistics.median(b["total"] for b in baseline)),
        },
        "baseline_cp_fsync_hash": {
            "best": {k: r3(v) for k, v in best_fsync.items()},
            "totals": [r3(b["total"]) for b in baseline_fsync],
        },
        "copy_and_hash_alone": {
            "best": r3(min(mover)),
            "totals": [r3(t) for t in mover],
            "median": r3(statistics.median(mover)),
        },
        "upload": {
            "best_total": r3(best_upload["total"]),
            "totals": [r3(u["total"]) for u in uploads],
            "median_total": r3(statistics.median(u["total"] for u in uploads)),
            "best_phases": {k: r3(v) for k, v in best_upload["phases"].items()},
            "all_phases": [{k: r3(v) for k, v in u["phases"].items()} for u in uploads],
            "server_verify_mb_per_s": r3(
                size / 1e6 / best_upload["phases"]["server verify (claim + hash)"]
            ),
        },
        "what_if_copy_file_range": {
            "note": "benchmark-local mover: copy_file_range + fsync, then hash_path(source)",
            "mover_alone": {"best": r3(min(mover_cfr)), "totals": [r3(t) for t in mover_cfr]},
            "upload_best_total": r3(min(u["total"] for u in uploads_cfr)),
            "upload_totals": [r3(u["total"]) for u in uploads_cfr],
            "upload_best_phases": {
                k: r3(v) for k, v in min(uploads_cfr, key=lambda u: u["total"])["phases"].items()
            },
            "ratio_upload_to_cp_hash": r3(
                min(u["total"] for u in uploads_cfr) / best_base["total"]
            ),
            "ratio_upload_to_cp_fsync_hash": r3(
                min(u["total"] for u in uploads_cfr) / best_fsync["total"]
            ),
        },
        "ratio_upload_to_cp_hash": r3(ratio),
        "ratio_upload_to_cp_fsync_hash": r3(best_upload["total"] / best_fsync["total"]),
        "ratio_median": r3(
            statistics.median(u["total"] for u in uploads)
            / statistics.median(b["total"] for b in baseline)
        ),
        "example_run_events": example,
        "goal_value": r3(ratio),
    }


# -- (b) sequential small uploads ----------------------------------------------------------


def one_small_upload(bench: Bench, local: Path, name: str) -> dict[str, Any]:
    """Stage, copy (the client's copy_and_hash), commit, poll every 20 ms; wall-clock marks."""
    client = bench.client
    t0 = time.time()
    staged = client.request("POST", "/uploads", json={"name": name, "size": local.stat().st_size})
    info = staged.json()
    t_staged = time.time()
    checksum = copy_and_hash(local, info["staging_path"], client.algorithm)
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
        assert run.enqueued and run.starting and run.started, run
        parts = {
            "commit sent -> run enqueued": run.enqueued - result["t_commit_sent"],
            "queue (enqueued -> RUN_STARTING)": run.starting - run.enqueued,
            "run worker start (STARTING -> RUN_START)": run.started - run.starting,
            "run start -> stored (step, claim, verify, rename, record)": stored - run.started,
            "stored -> client sees it (20 ms poll)": result["t_seen"] - stored,
        }
        for key, value in parts.items():
            breakdown.setdefault(key, []).append(value)
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
        "commit_to_stored_breakdown": {key: summary(v) for key, v in breakdown.items()},
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
        "first_enqueued_after_start": r3(min(r.enqueued or end for r in unique) - since),
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
            "  of which copy_and_hash": r3(sum(b - a for a, b in copies)),
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


def git_state() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (others edit too)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified": git("diff", "--name-only").split(),
    }


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
    parser.add_argument("--only", default="a,b,c,d", help="parts to run, e.g. b,c")
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
        with live_site(work) as bench:
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
        remove_tree(work)
    result = {
        # Other work on the machine skews the numbers: a 1-minute load well above what the
        # benchmark itself causes means the run was disturbed.
        "machine": {**machine(), "loadavg_1min": [load_before, os.getloadavg()[0]]},
        "parameters": vars(args),
        "site": "LiveLibrarian: SQLite catalogue, SQLite Dagster storage, one local store",
        "git": git_at_start,
        "first_upload_after_start_seconds": r3(first_upload),
        "python_import_seconds": import_times(),
        "parts": parts,
        "goals": verdicts(parts),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if only != {"a", "b", "c", "d"} and previous.get("parts"):
        # A partial run updates its parts and keeps the others' last numbers.
        result["parts"] = {**previous["parts"], **parts}
        result["goals"] = verdicts(result["parts"])
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
