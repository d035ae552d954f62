"""Benchmark checksumming and copy-while-hashing against baselines measured in the same run.

Absolute MB/s depend on the machine, so the goals are ratios: hashing with the default
algorithm against a plain read of the same file (the I/O limit), and copy_and_hash
against ``cp``.  The test file is kept in the page cache, so the numbers measure CPU
cost per byte, which is what the implementation controls; the "(cold)" pair reads the
file from storage instead (evicted with POSIX_FADV_DONTNEED), for information.

Usage: python benchmarks/bench_checksum.py [--size-mib 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import mmap
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

from librarian_dagster.storage.checksums import (
    ALGORITHMS,
    CHUNK_SIZE,
    DEFAULT_ALGORITHM,
    hash_file,
)
from librarian_dagster.storage.movers.copy import copy_and_hash

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
RESULTS = HERE / "results" / "checksum.json"
COLD = " (cold)"
BLOCK = 64 << 20  # one random block, repeated: random enough for hashes, quick to create
GOALS = {  # name: (measurement, baseline, minimum ratio)
    "default algorithm >= 0.85 x read limit": (f"hash_file[{DEFAULT_ALGORITHM}]", "read", 0.85),
    # cp leaves its copy dirty in memory: compare the mode that does the same.
    "copy-while-hashing >= 0.7 x cp": ("copy_and_hash[xxh3_128,no writeback]", "cp", 0.7),
}


def make_file(path: Path, size: int, scratch: Path) -> None:
    """Write ``size`` bytes of incompressible data and warm them into the page cache.

    One untimed copy to ``scratch`` makes the guest touch memory for a file's worth of
    page cache first; on a VM the first touch is several times slower than later ones.
    """
    block = os.urandom(BLOCK)
    with open(path, "wb") as out:
        for offset in range(0, size, BLOCK):
            out.write(block[: size - offset])
    cp(path, scratch, fsync=False)
    scratch.unlink()
    read_only(path)


def read_only(path: Path, misalign: int = 0) -> None:
    """The I/O limit: the same unbuffered 1 MiB readinto loop as hash_file, minus hashing.

    Like hash_file it reads into a page-aligned buffer; ``misalign`` shifts the buffer to
    show what an unlucky bytearray costs (malloc may put its data 16 bytes past a page).
    """
    buffer = memoryview(mmap.mmap(-1, CHUNK_SIZE + misalign))[misalign:]
    with open(path, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while f.readinto(buffer):
            pass


def hash_mmap(path: Path) -> str:
    """Reference only: xxh3 over an mmap skips the kernel-to-user copy that bounds readinto.

    Not used by the library: a file truncated or failing under a mapping raises SIGBUS and
    kills the process, where readinto raises an exception or returns a short read.
    """
    hasher = xxhash.xxh3_128()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(mapped) as view:
            for offset in range(0, len(view), CHUNK_SIZE):
                hasher.update(view[offset : offset + CHUNK_SIZE])
    return hasher.hexdigest()


def cp(src: Path, dst: Path, fsync: bool) -> None:
    """The copy baseline; coreutils cp may copy in-kernel (copy_file_range), no hashing."""
    subprocess.run(["cp", str(src), str(dst)], check=True)
    if fsync:
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def evict(path: Path) -> None:
    """Drop just this file's pages from the page cache, so the next read hits storage."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def measurements(src: Path, dst: Path) -> dict[str, Callable[[], object]]:
    """Every timed operation; each copy writes ``dst``, which is deleted after timing.

    Names ending in COLD start with ``src`` evicted from the page cache.
    """
    runs: dict[str, Callable[[], object]] = {
        "read": lambda: read_only(src),
        "read (buffer 16 B misaligned)": lambda: read_only(src, misalign=16),
    }
    for algorithm in ALGORITHMS:
        runs[f"hash_file[{algorithm}]"] = lambda a=algorithm: hash_file(src, a)
    runs["xxh3_128 via mmap (reference)"] = lambda: hash_mmap(src)
    runs["cp"] = lambda: cp(src, dst, fsync=False)
    for algorithm in ("xxh3_128", "md5"):
        runs[f"copy_and_hash[{algorithm},no writeback]"] = lambda a=algorithm: copy_and_hash(
            src, dst, a, fsync=False, writeback=False
        )
    # As the client calls it: writeback started per chunk, no fsync (the librarian's).
    runs["copy_and_hash[xxh3_128]"] = lambda: copy_and_hash(src, dst, fsync=False)
    runs["cp+fsync"] = lambda: cp(src, dst, fsync=True)
    runs["copy_and_hash[xxh3_128,fsync]"] = lambda: copy_and_hash(src, dst)
    runs["read" + COLD] = lambda: read_only(src)
    runs[f"hash_file[{DEFAULT_ALGORITHM}]{COLD}"] = lambda: hash_file(src)
    return runs


def run_all(src: Path, dst: Path, repeats: int) -> dict[str, list[float]]:
    """Time every operation ``repeats`` times, interleaved so drift hits all of them alike.

    Each round starts one operation later, so no operation always follows the same one
    (copy timings on a VM swing 2-5x with what ran just before).
    """
    seconds: dict[str, list[float]] = {}
    runs = list(measurements(src, dst).items())
    for round_ in range(repeats):
        shift = round_ * len(runs) // repeats
        for name, run in runs[shift:] + runs[:shift]:
            cold = name.endswith(COLD)
            if cold:
                evict(src)
            os.sync()  # no earlier run's writeback during this one
            start = time.perf_counter()
            run()
            seconds.setdefault(name, []).append(time.perf_counter() - start)
            dst.unlink(missing_ok=True)
            if cold:
                read_only(src)  # warm again for the next round
    return seconds


def machine() -> dict[str, object]:
    """Enough context to tell whether two result files are comparable."""
    fstype = subprocess.run(
        ["df", "--output=fstype", str(WORK)], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    cp_version = subprocess.run(["cp", "--version"], capture_output=True, text=True).stdout
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "filesystem": fstype,
        "cp": cp_version.splitlines()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def baseline_of(name: str) -> str | None:
    """The same-run baseline a measurement is compared with; None for the baselines."""
    if name in ("read", "read" + COLD, "cp", "cp+fsync"):
        return None
    if name.startswith("copy_and_hash"):
        return "cp+fsync" if "fsync" in name else "cp"
    return "read" + COLD if name.endswith(COLD) else "read"


def report(seconds: dict[str, list[float]], size: int) -> dict[str, object]:
    """Best-of-N MB/s, ratios to the same-run baselines, and the goal verdicts."""
    mbps = {name: size / min(times) / 1e6 for name, times in seconds.items()}
    ratios = {
        f"{name} / {baseline}": mbps[name] / mbps[baseline]
        for name in mbps
        if (baseline := baseline_of(name)) is not None
    }
    goals = {
        goal: {"ratio": round(ratio, 3), "minimum": minimum, "pass": ratio >= minimum}
        for goal, (name, baseline, minimum) in GOALS.items()
        for ratio in [mbps[name] / mbps[baseline]]
    }
    return {
        "measurements": {
            name: {
                "mb_per_s": round(mbps[name]),
                "median_mb_per_s": round(size / statistics.median(times) / 1e6),
                "seconds": [round(t, 3) for t in times],
            }
            for name, times in seconds.items()
        },
        "ratios": {name: round(r, 3) for name, r in ratios.items()},
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    WORK.mkdir(exist_ok=True)
    src, dst = WORK / "checksum-src.bin", WORK / "checksum-dst.bin"
    load_before = os.getloadavg()[0]
    try:
        make_file(src, size, dst)
        seconds = run_all(src, dst, args.repeats)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    result = {
        # Other work on the machine skews the numbers; a 1-minute load well above the
        # benchmark's own ~1 means the run was disturbed.
        "machine": {**machine(), "loadavg_1min": [load_before, os.getloadavg()[0]]},
        "size_bytes": size,
        "repeats": args.repeats,
        "chunk_size": CHUNK_SIZE,
        **report(seconds, size),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name, entry in result["measurements"].items():
        print(f"{name:32} {entry['mb_per_s']:>7} MB/s (median {entry['median_mb_per_s']})")
    for name, ratio in result["ratios"].items():
        print(f"{name:48} {ratio:.3f}")
    for goal, verdict in result["goals"].items():
        print(f"{'PASS' if verdict['pass'] else 'FAIL'}  {goal} (got {verdict['ratio']:.3f})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
