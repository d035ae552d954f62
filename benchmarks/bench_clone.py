"""Benchmark cloning books to a peer: throughput, one big book, and the clone sensor's tick.

Goals (issue 11):

* **throughput**: two live librarians (``tests.live.LiveLibrarian``: SQLite catalogues, SQLite
  Dagster storage, loopback, ``LocalMover``); 5,000 small books uploaded at A with
  ``upload_many``, then B made A's peer; from the end of the upload until A records a
  remote instance at B for every book: **>= 50 books/s**. Batches, per-batch milestones
  (catalogues, mover task directories, Dagster runs) and, in process, the catalogue work of
  one 1,024-book batch step by step (``clone_bench_setup.offline_batch_costs``).
* **big**: one 4 GiB book cloned A -> B end to end (A's upload stored -> A's remote instance
  at B) against ``cp`` + fsync + xxh3 hash of the copy on the same filesystem, interleaved
  (baseline, clone, baseline, clone, ...), fresh librarians per round: **<= 1.3 x** (ratio
  of medians). Each round also times that baseline and the mover's own ``copy_and_hash``
  right after another 4 GiB was written and kept, as the upload is before the clone's copy.
* **tick**: ``clone_sensor`` with 1,000,000 files catalogued and 10,000 waiting (the peer's
  high-water mark at 990,000; it holds the first 990,000), on SQLite and PostgreSQL: every
  tick until all are batched, then idle ticks: **<= 200 ms**. The bounded candidate look-up
  and the plain anti-join it replaces are timed on the same data.

Everything is made under ``benchmarks/work/clone-<hex>/`` (or temporary directories and
fresh PostgreSQL databases for the tick) and removed at the end; every librarian started is
stopped. Results: ``results/clone.json`` (one section per part; a run of some parts keeps
the others' last numbers).

Usage: python benchmarks/bench_clone.py [--part throughput|big|tick|all] [--books 5000]
       [--big-gib 4] [--rounds 2] [--files 1000000] [--waiting 10000] [--backend both]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import dagster as dg  # noqa: E402

from benchmarks import clone_bench_setup as setup  # noqa: E402  (sets LIBRARIAN_STATE_DIR)
from benchmarks.bench_sensor_tick import (  # noqa: E402
    open_site,
    postgres_databases,
    postgres_version,
)
from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.stats import r3  # noqa: E402
from librarian_dagster import definitions  # noqa: E402
from librarian_dagster.resources.librarian import CatalogueResource  # noqa: E402
from librarian_dagster.sensors import clones as clone_sensors  # noqa: E402
from librarian_dagster.settings import TransferSettings, load_settings  # noqa: E402
from librarian_dagster.storage.checksums import hash_path  # noqa: E402
from librarian_dagster.storage.posix import remove_if_present  # noqa: E402
from tests.clone_live import connect, query, scalar  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results" / "clone.json"
PARTS = ("throughput", "big", "tick")
GIB, MIB = 1 << 30, 1 << 20
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GOALS = {
    "throughput": ("books/s from the end of the upload to all at B >= 50", 50.0, ">="),
    "big": ("clone / (cp + fsync + hash), ratio of medians <= 1.3", 1.3, "<="),
    "tick": ("slowest clone_sensor tick, each backend <= 200 ms", 0.2, "<="),
}
# The issue's [transfer] defaults except where they would make the benchmark wait on purpose.
# catalogue_lag_seconds (default 30) guards against ids committed out of order on PostgreSQL;
# these catalogues are SQLite (one writer at a time). Keys this code does not know are left out.
THROUGHPUT_TRANSFER: dict[str, object] = {
    key: value
    for key, value in {
        "batch_min": 128,
        "batch_max": 1024,
        "batch_max_wait_seconds": 5,
        "poll_interval_seconds": 1,
        "callback_backoff_seconds": 2,
        "callback_backoff_max_seconds": 5,
        "catalogue_lag_seconds": 1,
    }.items()
    if key in TransferSettings.model_fields
}
# One book: batch_min 1, or it would wait batch_max_wait_seconds for company.
BIG_TRANSFER = {**THROUGHPUT_TRANSFER, "batch_min": 1, "batch_max_wait_seconds": 0}


# -- throughput ----------------------------------------------------------------------------


def duration(run: dict[str, Any]) -> float:
    return float(run["end"] - run["start"])


def part_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / "throughput"
    books = setup.small_books(root / "books", args.books)
    total_bytes = sum(
        sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        if p.is_dir()
        else p.stat().st_size
        for p, _ in books
    )
    samples: list[list[float]] = []
    with contextlib.ExitStack() as stack:
        storage = None
        if args.storage == "postgresql":  # production: catalogues and Dagster on PostgreSQL
            names = stack.enter_context(
                postgres_databases(
                    args.postgres_url, "bench_cat_a", "bench_dag_a", "bench_cat_b", "bench_dag_b"
                )
            )
            base = args.postgres_url.rsplit("/", 1)[0]
            dagster_base = base.replace("postgresql+psycopg://", "postgresql://")
            storage = {
                "site-a": (f"{base}/{names[0]}", f"{dagster_base}/{names[1]}"),
                "site-b": (f"{base}/{names[2]}", f"{dagster_base}/{names[3]}"),
            }
        result = _throughput(args, root, books, total_bytes, samples, storage)
    return result


def _throughput(
    args: argparse.Namespace,
    root: Path,
    books: list[tuple[Path, str]],
    total_bytes: int,
    samples: list[list[float]],
    storage: dict[str, tuple[str, str]] | None,
) -> dict[str, Any]:
    with setup.live_pair(root, THROUGHPUT_TRANSFER, storage) as (a, b):
        connect(b, a)  # b knows a (its callbacks go there); a learns of b after the upload
        with setup.uploader(a) as alice:
            print(f"  uploading {len(books):,} books at A ...", flush=True)
            started = time.time()
            alice.upload_many(books, transfer="local", timeout=7200)
        t0 = time.time()
        upload_s = t0 - started
        print(f"  upload_many {upload_s:.1f} s; B becomes A's peer; waiting ...", flush=True)
        connect(a, b)

        def all_there() -> bool:
            count = setup.held_at(a, "site-b")
            samples.append([r3(time.time() - t0) or 0.0, count])
            return count >= len(books)

        seen = setup.wait_until(all_there, args.timeout, "every book at B", [a, b])
        last = setup.epoch(scalar(a, "SELECT max(created_at) FROM remote_instances"))
        assert last is not None
        wall = last - t0
        time.sleep(2)  # the runs that delivered the last callbacks end
        batches = setup.batch_timelines(a, b, t0)
        runs = {
            f"{side.name} {job}": setup.run_stats(setup.run_records(side, job))
            for side, job in (
                (a, "clone_batch"),
                (a, "deliver_callbacks"),
                (b, "receive_clones"),
                (b, "deliver_callbacks"),
            )
        }
        receive = setup.run_records(b, "receive_clones")
        slowest = {  # the longest run of each kind, event by event
            f"{side.name} {job}": setup.run_events(side, max(runs_of, key=duration)["run_id"])
            for side, job in ((a, "clone_batch"), (b, "receive_clones"))
            if (runs_of := [r for r in setup.run_records(side, job) if r["end"] and r["start"]])
        }
        checks = {
            "files_at_b": scalar(b, "SELECT count(*) FROM files"),
            "outgoing_not_stored_at_a": scalar(
                a, "SELECT count(*) FROM outgoing_transfers WHERE status != 'stored'"
            ),
            "outgoing_at_a": scalar(a, "SELECT count(*) FROM outgoing_transfers"),
            "events_at_a": scalar(a, "SELECT count(*) FROM events"),
            "events_at_b": scalar(b, "SELECT count(*) FROM events"),
        }
    print("  in-process catalogue work of one 1,024-book batch ...", flush=True)
    offline = []
    try:  # it calls services' private halves: a rename there must not lose the live numbers
        for i in range(args.offline_repeats):
            offline.append(setup.offline_batch_costs(root / f"offline-{i}", 1024, seed=100 + i))
    except Exception as error:
        print(f"  in-process measurement failed: {error!r}", flush=True)
        offline.append({"error": repr(error)})
    milestones = {  # over all batches: (first, last) time each milestone was reached
        key: [r3(min(found)), r3(max(found))]
        for key in setup.MILESTONES
        if (found := [m["milestones_s"][key] for m in batches if m["milestones_s"][key]])
    }
    receive_books = [r["books"] for r in receive]
    ok = [o for o in offline if "error" not in o]
    return {
        "books": len(books),
        "bytes": total_bytes,
        "directories": sum(1 for p, _ in books if p.is_dir()),
        "transfer_config": THROUGHPUT_TRANSFER,
        "upload_many_s": r3(upload_s),
        "wall_s": r3(wall),
        "books_per_s": r3(len(books) / wall),
        "seen_by_poll_s": r3(seen - t0),
        "batch_sizes": [m["books"] for m in batches],
        "batches": batches,
        "milestones_first_last_s": milestones,
        "runs": runs,
        "receive_runs_books": receive_books,
        "slowest_runs_events": slowest,
        "progress_samples": samples[:: max(1, len(samples) // 200)],
        "checks": checks,
        "offline_1024_batch_s": {
            key: {"median": statistics.median(o[key] for o in ok), "all": [o[key] for o in ok]}
            for key in (ok[0] if ok else {})
        },
        "offline_error": next((o["error"] for o in offline if "error" in o), None),
        "goal_value": r3(len(books) / wall),
    }


# -- big -----------------------------------------------------------------------------------


def clone_round(args: argparse.Namespace, src: Path, root: Path, name: str) -> dict[str, Any]:
    """Fresh A and B, peers both ways; upload ``src`` at A; until A has a copy at B."""
    try:
        with setup.live_pair(root, BIG_TRANSFER) as (a, b):
            connect(a, b)
            connect(b, a)
            with setup.uploader(a) as alice:
                setup.sync()
                upload_started = time.time()
                alice.upload(src, name, transfer="local", timeout=3600)
                upload_s = time.time() - upload_started
            stored_path = Path(scalar(a, "SELECT path FROM instances"))
            stored_cached = setup.cached_fraction(stored_path)
            setup.wait_until(lambda: setup.held_at(a, "site-b") >= 1, 3600, "the copy", [a, b])
            stored = setup.epoch(scalar(a, "SELECT created_at FROM files"))
            remote = setup.epoch(scalar(a, "SELECT created_at FROM remote_instances"))
            assert stored is not None and remote is not None
            time.sleep(1)
            (batch,) = setup.batch_timelines(a, b, stored)
            receive = setup.run_records(b, "receive_clones")
            at_b = query(b, "SELECT checksum, size FROM files")
            assert at_b == query(a, "SELECT checksum, size FROM files"), at_b
    finally:
        remove_if_present(root)
    size = src.stat().st_size
    moved = batch["phases_s"][setup.PHASES[3][0]]
    return {
        "total_s": r3(remote - stored),
        "upload_s": r3(upload_s),
        "stored_copy_at_a_cached": stored_cached,
        "milestones_s": batch["milestones_s"],
        "phases_s": batch["phases_s"],
        "mover_mb_per_s": round(size / 1e6 / moved, 1) if moved else None,
        "receive_runs": [
            {"queue_s": r3(r["start"] - r["created"]), "run_s": r3(r["end"] - r["start"])}
            for r in receive
            if r["start"] and r["end"]
        ],
    }


def part_big(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    free = shutil.disk_usage(WORK).free
    gib = args.big_gib if args.big_gib else (4 if free >= 20 * GIB else 2)
    size = int(gib * GIB)
    src = work / "big.bin"
    print(f"  {free / GIB:.0f} GiB free; writing a {gib} GiB book ...", flush=True)
    setup.make_big_file(src, size)
    setup.sync()
    hash_path(src)  # in the page cache for every operation alike
    rounds = []
    for i in range(args.rounds):
        load = os.getloadavg()[0]
        base = setup.baseline(src, work / f"copy-{i}.bin", args.drop_caches)
        kept = setup.baseline(src, work / f"copy-{i}.bin", args.drop_caches, work / "first.bin")
        alone = setup.mover_alone(src, work / f"mover-{i}.bin", work / "first.bin")
        print(
            f"  round {i + 1}: baseline {base['total_s']:.2f} s, after a kept write "
            f"{kept['total_s']:.2f} s, mover's copy alone (after one) {alone['total_s']:.2f} s",
            flush=True,
        )
        if args.drop_caches:
            setup.drop_caches()
        clone = clone_round(
            args, src, work / f"big-{i}", f"bench/big/round{i}-{uuid.uuid4().hex[:6]}.bin"
        )
        print(f"  round {i + 1}: clone {clone['total_s']:.2f} s", flush=True)
        rounds.append(
            {
                "baseline": base,
                "baseline_after_kept_write": kept,
                "mover_copy_alone_after_kept_write": alone,
                "clone": clone,
                "loadavg_1min": [r3(load), r3(os.getloadavg()[0])],
            }
        )
    remove_if_present(src)
    base_median = statistics.median(r["baseline"]["total_s"] for r in rounds)
    kept_median = statistics.median(r["baseline_after_kept_write"]["total_s"] for r in rounds)
    clone_median = statistics.median(r["clone"]["total_s"] for r in rounds)
    return {
        "size_bytes": size,
        "size_gib": gib,
        "free_disk_gib_before": round(free / GIB, 1),
        "transfer_config": BIG_TRANSFER,
        "page_cache": "dropped before each operation"
        if rounds and rounds[0]["baseline"]["caches_dropped"]
        else "not dropped (no permission): the source was in the page cache for both",
        "rounds": rounds,
        "baseline_median_s": r3(base_median),
        "clone_median_s": r3(clone_median),
        "ratio_of_medians": r3(clone_median / base_median),
        "baseline_after_kept_write_median_s": r3(kept_median),
        "ratio_to_baseline_after_kept_write": r3(clone_median / kept_median),
        "goal_value": r3(clone_median / base_median),
    }


# -- tick ----------------------------------------------------------------------------------


@contextlib.contextmanager
def timing_form_batches(log: list[float]) -> Any:
    """Time the sensor's call of ``form_batches`` (wrapped in this process only)."""
    real = clone_sensors.form_batches

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            log.append(time.perf_counter() - start)

    clone_sensors.form_batches = timed
    try:
        yield
    finally:
        clone_sensors.form_batches = real


def clone_tick(site: Any, peer_id: int, cursor: str | None) -> dict[str, Any]:
    before, mark = setup.table_counts(site.catalogue), setup.peer_mark(site.catalogue, peer_id)
    formed: list[float] = []
    with timing_form_batches(formed):
        start = time.perf_counter()
        context = dg.build_sensor_context(
            instance=site.instance,
            resources={"catalogue": CatalogueResource(config_file=site.config_file)},
            cursor=cursor,
        )
        context.log.setLevel(logging.WARNING)  # not a line per batch formed
        result = clone_sensors.clone_sensor(context)
        seconds = time.perf_counter() - start
    after = setup.table_counts(site.catalogue)
    inserted = {k: after[k] - before[k] for k in after}
    requests = result.run_requests or []
    moved = setup.peer_mark(site.catalogue, peer_id) != mark
    return {
        "s": round(seconds, 4),
        "form_batches_s": round(formed[0], 4) if formed else None,
        "batches": inserted["transfer_batches"],
        "books": inserted["outgoing_transfers"],
        "run_requests": len(requests),
        "rows_inserted": sum(inserted.values()),
        "rows_updated": inserted["transfer_batches"] + int(moved),  # leases + the mark
        "cursor": result.cursor or cursor,
    }


def load_code_location(config_file: str) -> None:
    """Load the definitions as a code server does before it evaluates a sensor: peers read
    from ``config_file``'s catalogue, then the loaded objects frozen out of the collector."""
    previous = os.environ.get("LIBRARIAN_CONFIG")
    os.environ["LIBRARIAN_CONFIG"] = config_file
    try:
        definitions.defs()
    finally:
        if previous is None:
            os.environ.pop("LIBRARIAN_CONFIG", None)
        else:
            os.environ["LIBRARIAN_CONFIG"] = previous


def tick_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    held = args.files - args.waiting
    with open_site(backend, args.postgres_url) as site:
        if args.batches_per_tick:  # the resource re-reads the file at every tick
            with open(site.config_file, "a") as config:
                config.write(f"[transfer]\nmax_batches_per_tick = {args.batches_per_tick}\n")
            site.settings = load_settings(Path(site.config_file))
        transfer = site.settings.transfer.model_dump(mode="json")
        load_code_location(site.config_file)
        print(f"  [{backend}] {args.files:,} files, {held:,} held by the peer ...", flush=True)
        start = time.perf_counter()
        peer_id = setup.bulk_catalogue(site.catalogue, backend, args.files, held)
        setup_s = time.perf_counter() - start
        print(f"  [{backend}] set up in {setup_s:.0f} s", flush=True)
        setup.reset_clone_state(site.catalogue, peer_id, args.files)  # nothing waiting
        empty = [clone_tick(site, peer_id, None) for _ in range(3)]
        rounds = []
        for _ in range(args.repeats):
            setup.reset_clone_state(site.catalogue, peer_id, held)
            ticks, cursor = [], None
            while not ticks or ticks[-1]["batches"]:
                ticks.append(clone_tick(site, peer_id, cursor))
                cursor = ticks[-1]["cursor"]
                setup.advance_batches(site.catalogue)  # the runs' part, untimed
                assert len(ticks) < 50, ticks
            ticks += [clone_tick(site, peer_id, cursor) for _ in range(4)]  # idle
            assert sum(t["books"] for t in ticks) == args.waiting, ticks
            rounds.append(ticks)
        setup.reset_clone_state(site.catalogue, peer_id, held)  # a cold tick, profiled
        profiler = cProfile.Profile()
        with profiler:
            clone_tick(site, peer_id, None)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(args.profile / f"clone-tick-{backend}.pstats")
        setup.reset_clone_state(site.catalogue, peer_id, held)
        limit = site.settings.transfer.max_batches_per_tick * site.settings.transfer.batch_max + 1
        queries = setup.time_queries(site.catalogue, backend, peer_id, held, args.repeats, limit)
    busy = [t for ticks in rounds for t in ticks if t["batches"]]
    idle = [t for ticks in rounds for t in ticks if not t["batches"]]
    first = rounds[0][0]
    slowest = max(t["s"] for ticks in rounds for t in ticks)
    by_position = [
        {
            "batches": rounds[0][i]["batches"],
            "books": rounds[0][i]["books"],
            "run_requests": rounds[0][i]["run_requests"],
            "rows_inserted": rounds[0][i]["rows_inserted"],
            "rows_updated": rounds[0][i]["rows_updated"],
            "s_each_round": [ticks[i]["s"] for ticks in rounds],
            "form_batches_s_each_round": [ticks[i]["form_batches_s"] for ticks in rounds],
        }
        for i in range(len(rounds[0]))
    ]
    return {
        "setup_s": round(setup_s, 1),
        "transfer_settings": transfer,
        "empty_tick_s": [t["s"] for t in empty],
        "cold_tick": first,
        "ticks_by_position": by_position,
        "busy_tick_s": {
            "median": r3(statistics.median(t["s"] for t in busy)),
            "max": r3(max(t["s"] for t in busy)),
        },
        "idle_tick_s": {
            "median": r3(statistics.median(t["s"] for t in idle)),
            "max": r3(max(t["s"] for t in idle)),
        },
        "slowest_tick_s": r3(slowest),
        "queries": queries,
        "cold_tick_profile_cumulative_s": setup.profile_breakdown(profiler),
        "pass": slowest <= GOALS["tick"][1],
    }


def part_tick(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    found = {backend: tick_backend(backend, args) for backend in backends}
    return {
        "files": args.files,
        "waiting": args.waiting,
        "repeats": args.repeats,
        "backends": found,
        "goal_value": max(b["slowest_tick_s"] for b in found.values()),
    }


# -- report --------------------------------------------------------------------------------


def machine(args: argparse.Namespace) -> dict[str, Any]:
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
        "postgresql": postgres_version(args.postgres_url),
        "filesystem": fstype,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def verdicts(parts: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for key, (description, limit, sense) in GOALS.items():
        if key in parts:
            value = parts[key]["goal_value"]
            passed = value >= limit if sense == ">=" else value <= limit
            found[description] = {"value": value, "limit": limit, "pass": passed}
    return found


def print_summary(parts: dict[str, Any]) -> None:
    for name in ("throughput", "throughput_postgresql"):
        if name not in parts:
            continue
        t = parts[name]
        print(f"\n{name}: {t['books']:,} books, {t['wall_s']:.1f} s, {t['books_per_s']} books/s")
        print(f"  batches {t['batch_sizes']}; upload_many {t['upload_many_s']:.1f} s")
        for key, (first, last) in t["milestones_first_last_s"].items():
            print(f"  {key:15} first {first:8.1f} s   last {last:8.1f} s")
        for label, value in t["offline_1024_batch_s"].items():
            print(f"  offline {value['median']:7.3f} s  {label}")
    if "big" in parts:
        g = parts["big"]
        for i, r in enumerate(g["rounds"]):
            base, clone = r["baseline"]["total_s"], r["clone"]["total_s"]
            alone = r["mover_copy_alone_after_kept_write"]["total_s"]
            print(f"big round {i + 1}: baseline {base:.2f} s, mover alone {alone:.2f} s, ", end="")
            print(f"clone {clone:.2f} s")
        print(f"big: ratio of medians {g['ratio_of_medians']:.2f} ({g['page_cache']})")
    if "tick" in parts:
        for backend, b in parts["tick"]["backends"].items():
            ticks = ", ".join(
                f"{p['books']}:{max(p['s_each_round']) * 1000:.0f}" for p in b["ticks_by_position"]
            )
            print(
                f"tick [{backend}] cold {b['cold_tick']['s'] * 1000:.0f} ms; books:max ms {ticks}"
            )
            for label, q in b["queries"].items():
                if "plan" not in label:
                    print(f"  {q['median_s'] * 1000:8.1f} ms  {label}")
    print(json.dumps(verdicts(parts), indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--books", type=int, default=5000, help="throughput: books")
    parser.add_argument("--offline-repeats", type=int, default=3, help="throughput: in process")
    parser.add_argument("--timeout", type=float, default=3600, help="throughput: give up after")
    parser.add_argument("--big-gib", type=float, help="big: size (default 4, 2 if < 20 GiB free)")
    parser.add_argument("--rounds", type=int, default=2, help="big: baseline/clone rounds")
    parser.add_argument("--drop-caches", action="store_true", help="big: try before each op")
    parser.add_argument("--files", type=int, default=1_000_000, help="tick: files catalogued")
    parser.add_argument("--waiting", type=int, default=10_000, help="tick: new for the peer")
    parser.add_argument("--repeats", type=int, default=3, help="tick: rounds and query repeats")
    parser.add_argument("--batches-per-tick", type=int, help="tick: max_batches_per_tick")
    parser.add_argument("--profile", type=Path, help="tick: also write pstats of a cold tick")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("LIBRARIAN_BENCH_POSTGRES_URL", POSTGRES_URL)
    )
    parser.add_argument(
        "--storage",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="throughput: catalogues and Dagster storage (postgresql: as in production)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)  # the sensor logs every batch
    chosen = PARTS if args.part == "all" else (args.part,)
    work = WORK / f"clone-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    steps = {"throughput": part_throughput, "big": part_big, "tick": part_tick}
    git_at_start, load_before = git_state(), os.getloadavg()[0]
    parts: dict[str, Any] = {}
    try:
        for step in chosen:
            key = step  # a throughput run on PostgreSQL keeps its own key (goals: embedded)
            if step == "throughput" and args.storage == "postgresql":
                key = "throughput_postgresql"
            print(f"== {key}", flush=True)
            load = os.getloadavg()[0]
            started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            parts[key] = steps[step](args, work)
            parts[key]["run"] = {
                "date": started,
                "loadavg_1min": [r3(load), r3(os.getloadavg()[0])],
                "git": git_state(),
            }
    finally:
        remove_if_present(work)  # also through read-only books
    result = {
        # Other work on the machine skews the numbers: a 1-minute load well above what the
        # benchmark itself causes (~1-2) means the run was disturbed.
        "machine": {**machine(args), "loadavg_1min": [load_before, os.getloadavg()[0]]},
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "git": git_at_start,
        "parts": parts,
    }
    previous = json.loads(args.results.read_text()) if args.results.exists() else {}
    result["parts"] = {**previous.get("parts", {}), **parts}  # other parts' last numbers
    result["goals"] = verdicts(result["parts"])
    args.results.parent.mkdir(exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(parts)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
