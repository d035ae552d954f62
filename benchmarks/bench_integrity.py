"""Benchmark the integrity pass: how fast it re-reads copies, and its slice queries at scale.

Goals (issue):

1. **Throughput**: ``services.integrity.verify_instances`` (re-read every copy, oldest
   verified first, hash it with xxh3_128, record the result) runs at **>= 0.9 x** the read
   rate of the same files, measured in the same run. Baseline: each file read sequentially
   into one page-aligned 8 MiB buffer (``readinto``), no hashing; ``cat`` of the files to
   /dev/null is a reference only. 2 GiB in 32 books (4 x 256 MiB, 24 x 32 MiB, 4 directories
   of 64 x 1 MiB), written straight into the store and catalogued (File + Instance rows, as
   ``tests/test_integrity_job.py`` ``shelve`` does). *Cold*: before every measurement each
   file is evicted from the page cache (``POSIX_FADV_DONTNEED``, after a ``sync``); *warm*:
   right after the cold ones, everything cached. Rounds interleave baseline, ``cat``, then
   the pass on each backend's catalogue (all sites share one store area), each round
   starting with the next of them in turn, with ``--pause`` seconds of rest before every
   cold read (this VM's disk reads faster after a rest: a fixed order favoured whatever
   went first); the copies' ``verified_at`` is reset before each pass, so every pass reads
   every copy. A reference, ``hash_only``: the library's ``hash_path`` of every book, no
   catalogue. Ratios: the medians' ratio (the goal's), and the median of each round's own
   ratio (``paired``).
2. **Slice**: with 1,000,000 files (one copy each, ``verified_at`` spread over 60 days in id
   order, 1 % with a corrupt-copy record, 100 of them open), ``integrity_slice.in_service_page``
   (256 copies, due before the scheduled pass's cut-off) takes **<= 200 ms**, first page and
   a page from the middle (keyset after the copy with id 500,000), on SQLite and on
   PostgreSQL. ``integrity_slice.overdue`` (count capped at 100,000) and
   ``integrity_repair.repairs_due`` (limit 100) are timed too (no goal). Each call runs in
   its own catalogue session, as the library calls it; 2 warm-ups, then ``--repeats`` rounds
   of the four calls interleaved; median and max. The plans of the statements they send are
   recorded (``EXPLAIN QUERY PLAN`` / ``EXPLAIN (ANALYZE, BUFFERS)``). Diagnostics, not the
   goal's numbers: the middle page with its keyset as a row-value comparison (hand-written),
   ``overdue`` when no copy is overdue (a healthy catalogue), and on SQLite the calls again
   after ``ANALYZE``.

Everything lives under ``benchmarks/work/integrity-<hex>/`` (PostgreSQL: fresh databases next
to ``--postgres-url``) and is removed at the end. Results: ``results/integrity.json``.

Usage: python benchmarks/bench_integrity.py [--backend both] [--rounds 3] [--scale 1.0]
           [--files 1000000] [--repeats 20] [--parts throughput,slice] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import integrity_bench_setup as setup  # noqa: E402
from benchmarks.bench_sensor_tick import POSTGRES_URL, postgres_version  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.stats import r3  # noqa: E402
from librarian_dagster.catalogue.database import dispose_catalogues  # noqa: E402
from librarian_dagster.services import integrity_repair, integrity_rolling, integrity_slice  # noqa: E402
from librarian_dagster.services.integrity import Budget, verify_instances  # noqa: E402
from librarian_dagster.settings import RollingSettings  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results" / "integrity.json"
THROUGHPUT_GOAL = 0.9  # x the read rate
QUERY_GOAL_S = 0.2
UTC = datetime.UTC


def clock(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


# -- 1. throughput ------------------------------------------------------------------------------


def throughput(root: Path, backends: list[str], args: argparse.Namespace) -> dict[str, Any]:
    layout = setup.books_layout(args.scale)
    total = sum(sum(sizes) for _, sizes in layout)
    with setup.catalogue_urls(backends, root, args.postgres_url, "books") as urls:
        sites = {
            b: setup.open_site(root / f"books-{b}", urls[b], b, root / "store-root")
            for b in backends
        }
        store = sites[backends[0]].store
        began = time.monotonic()
        files = setup.write_books(store, layout)
        written_s = time.monotonic() - began
        sums = setup.checksums(store, layout)
        names = {b: setup.catalogue_books(site, layout, sums) for b, site in sites.items()}

        def verify(backend: str) -> Callable[[], dict[str, Any]]:
            site = sites[backend]

            def run() -> dict[str, Any]:
                budget = Budget(max_books=len(layout), max_bytes=None)
                report = verify_instances(
                    site.catalogue, site.stores, budget=budget, settings=site.settings
                )
                assert report.good == names[backend], report.summary()
                assert report.bytes_read == total and not report.bad, report.summary()
                return {"report_s": r3(report.seconds), "books": len(report.good)}

            return run

        operations: dict[str, Callable[[], Any]] = {
            "baseline": lambda: {"bytes": setup.read_all(files)},
            "cat": lambda: {"bytes": setup.cat_all(files)},
            "hash_only": lambda: {"same": setup.checksums(store, layout) == sums},
            **{f"verify_{b}": verify(b) for b in backends},
        }
        rounds = []
        for round_no in range(args.rounds):
            row: dict[str, Any] = {"round": round_no}
            # Each round starts with the next operation: on a disk that reads faster after a
            # rest (a VM's burst credit), a fixed order would favour whichever goes first.
            order = list(operations)
            order = order[round_no % len(order) :] + order[: round_no % len(order)]
            row["order"] = order
            for cache in ("cold", "warm"):
                row[cache] = {}
                for name in order:
                    operation = operations[name]
                    if name.startswith("verify_"):
                        setup.reset_verified(sites[name[7:]], names[name[7:]])
                    if cache == "cold":
                        setup.evict(files)
                        time.sleep(args.pause)  # the same rest before every cold read
                    cached = setup.cached_fraction(files)
                    seconds, found = clock(operation)
                    row[cache][name] = {
                        "s": r3(seconds),
                        "MB/s": round(total / 1e6 / seconds),
                        "cached_before": cached,
                        **found,
                    }
            rounds.append(row)
            print(json.dumps(row), flush=True)
        dispose_catalogues()
    return {
        "data": {
            "bytes": total,
            "books": len(layout),
            "files": len(files),
            "layout": "4 x 256 MiB, 24 x 32 MiB, 4 directories of 64 x 1 MiB (at scale 1)",
            "write_and_sync_s": r3(written_s),
        },
        "rounds": rounds,
        "summary": summarise_throughput(rounds, backends, total),
    }


def summarise_throughput(
    rounds: list[dict[str, Any]], backends: list[str], total: int
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for cache in ("cold", "warm"):
        medians = {
            name: statistics.median(r[cache][name]["s"] for r in rounds)
            for name in rounds[0][cache]
        }
        part: dict[str, Any] = {
            name: {"median_s": r3(s), "MB/s": round(total / 1e6 / s)} for name, s in medians.items()
        }
        for ours in ["hash_only", *(f"verify_{backend}" for backend in backends)]:
            ratio = medians["baseline"] / medians[ours]
            per_round = [r[cache]["baseline"]["s"] / r[cache][ours]["s"] for r in rounds]
            part[ours] |= {
                "ratio_to_baseline": r3(ratio),
                "ratio_per_round": [r3(x) for x in per_round],
                # Each round's ratio, then their median: drift between rounds cancels.
                "ratio_paired_median": r3(statistics.median(per_round)),
            }
            if ours != "hash_only":  # the reference has no goal
                part[ours] |= {"goal": f">= {THROUGHPUT_GOAL} x", "pass": ratio >= THROUGHPUT_GOAL}
        found[cache] = part
    return found


# -- 2. the slice queries at scale ---------------------------------------------------------------


def slice_queries(root: Path, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with setup.catalogue_urls([backend], root, args.postgres_url, "slice") as urls:
        site = setup.open_site(
            root / f"slice-{backend}", urls[backend], backend, root / f"slice-{backend}-store"
        )
        now = datetime.datetime.now(UTC)
        print(f"  [{backend}] {args.files:,} files ...", flush=True)
        setup_s, data = clock(lambda: setup.slice_catalogue(site, args.files, now))
        print(f"  [{backend}] set up in {setup_s:.0f} s", flush=True)
        store_ids = [site.store_id()]
        period = site.settings.integrity.period_days
        due = integrity_slice.due_before(now, period)
        middle = setup.copy_at(site, args.files // 2)

        def page(after: tuple[datetime.datetime | None, int] | None) -> Callable[[], int]:
            def run() -> int:
                with site.catalogue.session() as session:
                    found = integrity_slice.in_service_page(
                        session, [], store_ids, due=due, after=after, size=integrity_slice.PAGE
                    )
                assert len(found) == integrity_slice.PAGE, len(found)
                return len(found)

            return run

        def overdue_before(before: datetime.datetime) -> Callable[[], int]:
            def run() -> int:
                with site.catalogue.session() as session:
                    return integrity_slice.overdue(session, store_ids, before)

            return run

        overdue = overdue_before(now - datetime.timedelta(days=period))

        def repairs() -> int:
            with site.catalogue.session() as session:
                return len(integrity_repair.repairs_due(session, now, limit=100))

        # A rolling store's selection (every file is past keep_days here: the bulk
        # catalogue's books are all from 2024), and with a byte budget (its SUM over the
        # store's copies, then the oldest beyond the budget).
        by_days = RollingSettings(keep_days=30, min_copies_elsewhere=1)
        by_bytes = RollingSettings(keep_days=3650, min_copies_elsewhere=1, max_bytes=10**6)

        def rolling(policy: RollingSettings) -> Callable[[], int]:
            def run() -> int:
                with site.catalogue.session() as session:
                    found = integrity_rolling.candidates(session, store_ids[0], policy, now).books
                assert len(found) == policy.max_books_per_run, len(found)
                return len(found)

            return run

        queries = {
            "in_service_page: first page": page(None),
            "in_service_page: middle page": page(middle),
            "rolling selection: keep_days": rolling(by_days),
            "rolling selection: max_bytes": rolling(by_bytes),
            "overdue": overdue,
            "repairs_due": repairs,
        }
        plans = {label: setup.plans(site, call) for label, call in queries.items()}
        summary = time_calls(queries, args.repeats)
        for label, cell in summary.items():
            if label.startswith(("in_service_page", "rolling selection")):
                cell["goal"] = f"<= {QUERY_GOAL_S * 1000:.0f} ms (max)"
                cell["pass"] = cell["max_ms"] <= QUERY_GOAL_S * 1000
            elif cell["max_ms"] > QUERY_GOAL_S * 1000:
                cell["note"] = "over 200 ms (no goal)"
        # Diagnostics (not the goal's numbers): the middle page with a row-value keyset, and
        # on SQLite the same calls once ANALYZE has given the planner statistics.
        # Also: the overdue count of a healthy catalogue (no copy overdue: nothing to stop at).
        row_value = {
            "diagnostic: middle page, row-value keyset": lambda: setup.row_value_page(
                site, store_ids, due, (middle[0] or due, middle[1]), integrity_slice.PAGE
            )
        }
        healthy = {
            "diagnostic: overdue, none overdue": overdue_before(
                datetime.datetime.fromisoformat(data["base"])
            )
        }
        diagnostics: dict[str, Any] = {
            "row_value_keyset_and_healthy_overdue": {
                "timing": time_calls(row_value | healthy, args.repeats),
                "plans": {k: setup.plans(site, c) for k, c in (row_value | healthy).items()},
            }
        }
        if backend == "sqlite":
            with site.catalogue.engine.connect() as connection:
                analyze_s, _ = clock(lambda: connection.exec_driver_sql("ANALYZE"))
                connection.commit()
            pages = {k: v for k, v in queries.items() if k.startswith("in_service_page")}
            again = pages | row_value | {"overdue": overdue} | healthy
            diagnostics["after_analyze"] = {
                "analyze_s": r3(analyze_s),
                "timing": time_calls(again, args.repeats),
                "plans": {k: setup.plans(site, call) for k, call in again.items()},
            }
        dispose_catalogues()
    return {
        "files": args.files,
        "setup_s": r3(setup_s),
        "data": data,
        "due_before": due.isoformat(),
        "middle_after": [middle[0].isoformat() if middle[0] else None, middle[1]],
        "summary": summary,
        "plans": plans,
        "diagnostics": diagnostics,
    }


def time_calls(queries: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """Two warm-ups, then ``repeats`` rounds of every call, interleaved."""
    for _ in range(2):
        for call in queries.values():
            call()
    times: dict[str, list[float]] = {label: [] for label in queries}
    rows: dict[str, Any] = {}
    for _ in range(repeats):
        for label, call in queries.items():
            seconds, rows[label] = clock(call)
            times[label].append(seconds)
    return {
        label: {
            "rows": rows[label],
            "median_ms": round(statistics.median(values) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2),
            "min_ms": round(min(values) * 1000, 2),
            "all_ms": [round(v * 1000, 2) for v in values],
        }
        for label, values in times.items()
    }


# -- the run --------------------------------------------------------------------------------------


def machine(args: argparse.Namespace, backends: list[str]) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(args.postgres_url) if "postgresql" in backends else None,
        "xxhash": xxhash.VERSION,
    }


def table(report: dict[str, Any]) -> str:
    lines = []
    if "throughput" in report:
        for cache, part in report["throughput"]["summary"].items():
            for name, cell in part.items():
                ratio = cell.get("ratio_to_baseline")
                verdict = {True: "PASS", False: "FAIL"}.get(cell.get("pass"), "reference")
                paired = cell.get("ratio_paired_median")
                extra = f"  {ratio} x (paired {paired} x)  {verdict}" if ratio else ""
                lines.append(
                    f"{cache:5} {name:18} {cell['median_s']:7.3f} s {cell['MB/s']:6} MB/s{extra}"
                )
    for backend, part in report.get("slice", {}).items():
        cells = part["summary"] | {
            f"{cell} ({name})" if name == "after_analyze" else cell: value
            for name, found in part["diagnostics"].items()
            for cell, value in found["timing"].items()
        }
        for label, cell in cells.items():
            verdict = {True: "PASS", False: "FAIL"}.get(cell.get("pass"), cell.get("note", ""))
            lines.append(
                f"{backend:10} {label[:60]:60} median {cell['median_ms']:8.2f} ms"
                f"  max {cell['max_ms']:8.2f} ms  rows {cell['rows']}  {verdict}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=10, help="a multiple of 5 rotates evenly")
    parser.add_argument(
        "--pause", type=float, default=2.0, help="seconds of rest before each cold read"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="book sizes x this")
    parser.add_argument("--files", type=int, default=1_000_000, help="files for the slice")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each query")
    parser.add_argument("--parts", default="throughput,slice")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LIBRARIAN_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="a database on the server to use; fresh databases are created beside it",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    parts = set(args.parts.split(","))
    load_before = os.getloadavg()[0]
    report: dict[str, Any] = {
        "benchmark": "integrity",
        "when": datetime.datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(args, backends),
        "code": git_state(),
        "parameters": {k: v for k, v in vars(args).items() if k != "output"}
        | {"backends": backends},
    }
    WORK.mkdir(exist_ok=True)
    root = WORK / f"integrity-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        if "throughput" in parts:
            report["throughput"] = throughput(root, backends, args)
        if "slice" in parts:
            report["slice"] = {b: slice_queries(root, b, args) for b in backends}
    finally:
        dispose_catalogues()
        shutil.rmtree(root, ignore_errors=True)
    report["machine"]["loadavg_1min"] = [load_before, os.getloadavg()[0]]
    report["finished"] = datetime.datetime.now(UTC).isoformat(timespec="seconds")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
