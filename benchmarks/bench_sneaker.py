"""Benchmark SneakerNet: filling a drive, and ingesting it at the destination.

Goal (issue 12): fill and ingest of 2 GiB in books of mixed sizes, each against ``cp -r`` +
fsync + xxh3 of the same data measured in the same run: **<= 1.2 x each** (upstream copies,
then re-reads to hash).

* **fill**: site-a (in process: catalogue, stores, the real ``fill_sneaker_drive`` job run
  with ``execute_in_process`` on a Dagster instance of its own) holds the books in its main
  store; the drive is a directory on the same filesystem. Timed: the run, from launch to
  its end (the drive filled, every book verified and recorded). Baseline: ``cp -r`` of the
  store's books to a new directory on the drive's filesystem, ``sync -f``, then
  ``hash_path`` (xxh3_128) of every copied book.
* **ingest**: site-b (in process) gets ``POST /sneaker/ingest`` through its real API route,
  then the ``ingest_sneaker_drive`` run its sensor asks for. Timed: from the POST to the
  run's end (every book copied, verified against the manifest, stored, recorded).
  Baseline: ``cp -r`` of the drive's books into site-b's store filesystem, ``sync -f``,
  ``hash_path`` of every copy.

Rounds interleave baseline and measured run (baseline, fill, baseline, ingest, ...); the
drive is emptied between fills and site-b is fresh for each ingest. The books are 2 GiB:
1 x 512 MiB, 6 x 128 MiB, 16 x 32 MiB, 3 directories of 64 x 1 MiB, 60 files of 1 MiB.
Everything lives under ``benchmarks/work/sneaker-<hex>/`` and is removed at the end.
Results: ``results/sneaker.json``.

Both are measured on SQLite (the embedded default: catalogue and Dagster storage) and on
PostgreSQL (production: the catalogue in a fresh schema, Dagster's storage in a fresh
database through dagster-postgres, both dropped at the end).

Usage: python benchmarks/bench_sneaker.py [--rounds 3] [--scale 1.0] [--backend both]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
if "LIBRARIAN_STATE_DIR" not in os.environ:  # serve-lock pointers go here, not to ~
    os.environ["LIBRARIAN_STATE_DIR"] = tempfile.mkdtemp(prefix="bench-sneaker-state-")

import dagster as dg  # noqa: E402
from sqlalchemy import delete, select, update  # noqa: E402

from benchmarks.bench_ingest import cached_fraction  # noqa: E402
from benchmarks.bench_sensor_tick import POSTGRES_URL, postgres_databases  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.stats import r3  # noqa: E402
from librarian_dagster.catalogue.models import Instance, Store  # noqa: E402
from librarian_dagster.definitions import build_definitions  # noqa: E402
from librarian_dagster.jobs.names import DRIVE_INGEST_OP, FILL_JOB, FILL_OP  # noqa: E402
from librarian_dagster.resources import librarian_resources  # noqa: E402
from librarian_dagster.sensors.sneaker import sneaker_ingest_sensor  # noqa: E402
from librarian_dagster.services.peers import add_peer  # noqa: E402
from librarian_dagster.services.sneaker_manifest import write_manifest  # noqa: E402
from librarian_dagster.states import DriveState  # noqa: E402
from librarian_dagster.storage import posix  # noqa: E402
from librarian_dagster.storage.checksums import hash_path  # noqa: E402
from librarian_dagster.wire import PeerCreate  # noqa: E402
from tests.clone_helpers import (  # noqa: E402
    CloneSite,
    befriend_both,
    clone_sites,
    postgres_schemas,
)
from tests.ingest_helpers import Site  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results" / "sneaker.json"
MIB = 1 << 20
GOAL = 1.2
ADMIN = ("admin", "admin-password")


def books_layout(scale: float) -> list[tuple[str, list[int]]]:
    """(name, file sizes) of the books; a list of one size is a file book."""

    def size(mib: int) -> int:
        return max(4096, int(mib * MIB * scale))

    books: list[tuple[str, list[int]]] = [("bench/big-0", [size(512)])]
    books += [(f"bench/medium-{i}", [size(128)]) for i in range(6)]
    books += [(f"bench/small-{i:02d}", [size(32)]) for i in range(16)]
    books += [(f"bench/dir-{i}", [size(1)] * 64) for i in range(3)]
    books += [(f"bench/tiny-{i:02d}", [size(1)]) for i in range(60)]
    return books


def make_books(root: Path, layout: list[tuple[str, list[int]]]) -> list[tuple[Path, str]]:
    block = os.urandom(64 * MIB)
    made = []
    for n, (name, sizes) in enumerate(layout):
        path = root / name.replace("/", "_")
        targets = [path] if len(sizes) == 1 else [path / f"part-{i:03d}.dat" for i in range(64)]
        for i, (target, size) in enumerate(zip(targets, sizes, strict=True)):
            target.parent.mkdir(parents=True, exist_ok=True)
            offset = (n * 7919 + i * 104729) % MIB  # each file its own bytes
            with open(target, "wb") as out:
                written = 0
                while written < size:
                    piece = block[offset : offset + min(size - written, len(block) - offset)]
                    out.write(piece)
                    written += len(piece)
                    offset = 0
        made.append((path, name))
    return made


def baseline(books: list[Path], destination: Path) -> dict[str, Any]:
    """``cp -r`` of the books into ``destination``, ``sync -f``, xxh3 of every copy."""
    destination.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run(["cp", "-r", *map(str, books), str(destination)], check=True)
    copied = time.monotonic()
    subprocess.run(["sync", "-f", str(destination)], check=True)
    synced = time.monotonic()
    for book in books:
        hash_path(destination / book.name)
    end = time.monotonic()
    posix.remove_tree(destination)
    return {
        "total_s": r3(end - start),
        "cp_s": r3(copied - start),
        "sync_s": r3(synced - copied),
        "hash_s": r3(end - synced),
    }


def empty_drive(a: CloneSite, drive: Path) -> None:
    """Untimed, between fills: the drive's books and their rows gone, the drive filling."""
    for entry in (drive / "store").iterdir():
        posix.remove_tree(entry)
    with a.catalogue.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == "drive1"))
        session.execute(delete(Instance).where(Instance.store_id == store_id))
        session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(state=DriveState.FILLING, fill_high_water_file_id=0)
        )
    posix.remove_if_present(drive / "librarian-manifest.json")
    subprocess.run(["sync"], check=True)


@contextlib.contextmanager
def dagster_instance(home: Path, backend: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance of its own: SQLite under ``home`` (the embedded default), or
    dagster-postgres on a fresh database (production), dropped at the end."""
    home.mkdir()
    if backend == "sqlite":
        with dg.instance_for_test(temp_dir=str(home), set_dagster_home=False) as instance:
            yield instance
        return
    with postgres_databases(POSTGRES_URL, "bench_dagster") as (database,):
        url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        overrides = {"storage": {"postgres": {"postgres_url": url}}}
        with dg.instance_for_test(
            temp_dir=str(home), overrides=overrides, set_dagster_home=False
        ) as instance:
            yield instance


@contextlib.contextmanager
def catalogues(backend: str, count: int) -> Iterator[list[str] | None]:
    """Catalogue URLs for ``count`` sites: None (SQLite files of their own) or fresh
    PostgreSQL schemas."""
    if backend == "sqlite":
        yield None
        return
    with postgres_schemas(count) as urls:
        yield urls


def run_fill(a: CloneSite, instance: dg.DagsterInstance) -> dict[str, Any]:
    job = build_definitions().resolve_job_def(FILL_JOB)
    start = time.monotonic()
    result = job.execute_in_process(
        run_config={"ops": {FILL_OP: {"config": {"store": "drive1"}}}},
        instance=instance,
        resources=librarian_resources(str(a.settings.config_file)),
        raise_on_error=True,
    )
    end = time.monotonic()
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.step_output_data.metadata.items()}
    return {"total_s": r3(end - start), "books": metadata["books"], "bytes": metadata["bytes"]}


def run_ingest(root: Path, drive: Path, round_no: int, backend: str) -> dict[str, Any]:
    """A fresh site-b: POST /sneaker/ingest, then the run its sensor asks for. Its peer
    site-a answers nothing (a refused connection): callbacks wait in the outbox, as when
    the origin is down, and cost the run one failed connection."""
    base = root / f"ingest-{round_no}"
    with catalogues(backend, 1) as urls, clone_sites(base, ["site-b"], urls) as sites:
        b = sites["site-b"]
        add_peer(
            b.catalogue,
            b.settings,
            PeerCreate(
                name="site-a",
                url="http://127.0.0.1:9",
                user="site-b",
                password="unused-password",
                mover="local",
                check=False,
            ),
        )
        with dagster_instance(base / "dagster-b", backend) as instance:
            start = time.monotonic()
            answer = b.client.post("/api/v2/sneaker/ingest", json={"drive": str(drive)}, auth=ADMIN)
            assert answer.status_code == 202, answer.text
            planned = time.monotonic()
            context = dg.build_sensor_context(
                instance=instance, resources=librarian_resources(str(b.settings.config_file))
            )
            (request,) = sneaker_ingest_sensor(context).run_requests
            job = build_definitions().resolve_job_def(request.job_name or "")
            result = job.execute_in_process(
                run_config=request.run_config,
                instance=instance,
                resources=librarian_resources(str(b.settings.config_file)),
                tags=request.tags,
                raise_on_error=True,
            )
            end = time.monotonic()
            stored = result.asset_materializations_for_node(DRIVE_INGEST_OP)
    shutil.rmtree(base)
    return {"total_s": r3(end - start), "plan_s": r3(planned - start), "books": len(stored)}


def drive_toml(drive: Path) -> str:
    return (
        f'[[stores]]\nname = "drive1"\nkind = "sneaker"\nroot = "{drive}"\n'
        "require_mount = false\nreserve_bytes = 0\n"
    )


@contextlib.contextmanager
def origin(root: Path, drive: Path, backend: str) -> Iterator[CloneSite]:
    extra = {"site-a": drive_toml(drive)}
    with (
        catalogues(backend, 2) as urls,
        clone_sites(root / "origin", ["site-a", "site-b"], urls, extra_toml=extra) as sites,
    ):
        befriend_both(sites["site-a"], sites["site-b"])
        yield sites["site-a"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="book sizes x this")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="catalogue and Dagster storage: SQLite (embedded) or PostgreSQL (production)",
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    WORK.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "sneaker",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "code": git_state(),
    }
    for backend in backends:
        root = WORK / f"sneaker-{uuid.uuid4().hex[:8]}"
        root.mkdir()
        try:
            report[backend] = measure(root, args, backend)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(backend, json.dumps(report[backend]["summary"], indent=2), flush=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def measure(root: Path, args: argparse.Namespace, backend: str) -> dict[str, Any]:
    layout = books_layout(args.scale)
    sources = make_books(root / "sources", layout)
    total = sum(sum(sizes) for _, sizes in layout)
    drive = root / "drive1"
    drive.mkdir()
    rounds: list[dict[str, Any]] = []
    with origin(root, drive, backend) as a:
        helper = Site(a.settings, a.catalogue, a.stores)
        for path, name in sources:
            assert helper.ingest(helper.upload(name, path)).status == "stored"
        shutil.rmtree(root / "sources")
        stored = [a.store.path_for(name) for _, name in sources]
        with dagster_instance(root / "dagster-a", backend) as instance:
            for round_no in range(args.rounds):
                row: dict[str, Any] = {"round": round_no}
                row["source_cached"] = cached_fraction(stored[0])
                row["fill_baseline"] = baseline(stored, drive / "baseline")
                empty_drive(a, drive)
                row["fill"] = run_fill(a, instance)
                write_manifest(a.catalogue, a.settings, "drive1", None, force=True)
                on_drive = [drive / "store" / name for _, name in sources]
                row["ingest_baseline"] = baseline(on_drive, root / "b-baseline")
                row["ingest"] = run_ingest(root, drive, round_no, backend)
                rounds.append(row)
                print(json.dumps(row), flush=True)
                if round_no + 1 < args.rounds:
                    empty_drive(a, drive)
    summary = summarise(rounds, total)
    return {
        "data": {"bytes": total, "books": len(layout), "files": sum(len(s) for _, s in layout)},
        "rounds": rounds,
        "summary": summary,
    }


def summarise(rounds: list[dict[str, Any]], total: int) -> dict[str, Any]:
    found: dict[str, Any] = {"bytes": total}
    for part in ("fill", "ingest"):
        ours = statistics.median(r[part]["total_s"] for r in rounds)
        base = statistics.median(r[f"{part}_baseline"]["total_s"] for r in rounds)
        ratio = ours / base
        found[part] = {
            "median_s": r3(ours),
            "baseline_median_s": r3(base),
            "MB/s": r3(total / 1e6 / ours),
            "baseline_MB/s": r3(total / 1e6 / base),
            "ratio": r3(ratio),
            "goal": f"<= {GOAL} x",
            "pass": ratio <= GOAL,
        }
    return found


if __name__ == "__main__":
    main()
