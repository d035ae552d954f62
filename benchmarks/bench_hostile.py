"""Load test: a well-behaved client's latency on an idle librarian and under hostile load.

Each round starts one real librarian (``tests.live.LiveLibrarian``: ``librarian init`` +
``librarian serve``, SQLite catalogue and SQLite Dagster storage, free loopback ports) under
``benchmarks/work/``, with the **production argon2 parameters** (the ``[security]`` defaults;
the tests' cheap ones are removed from the configuration, and the stored hashes are checked)
and every ``[api]`` limit at its default. Through the API it creates a well-behaved
``read_append`` user and ``--attackers`` ``read_append`` attacker users, then runs, on the
same librarian:

1. **idle**: the well-behaved client uploads ``--uploads`` 1 KiB files one after the other
   over HTTP (``POST /uploads``, ``PUT /uploads/{id}/content``, ``POST .../commit``, then
   ``GET /uploads/{id}`` every 20 ms until final) and after each upload searches for it
   (``GET /files?name=...``, the query ``LibrarianClient.search_files`` sends);
2. **hostile**: the same workload with new names while ``--stalls`` stalled uploads (each a
   raw socket: a staged upload of ``STALL_DECLARED`` bytes, ``PUT .../content`` with that
   ``Content-Length``, 16 bytes sent, then nothing) are kept open for the whole phase, and
   ``--wrong`` wrong-password requests (``GET /files``, ``--wrong-parallel`` at a time, back
   to back, Retry-After ignored) go half to the well-behaved user's name and half to other
   names (``admin`` and names nobody has). A stall the server ends is opened again: after a
   429 once its ``Retry-After`` has passed, after a 408 (idle body cut off) at once, so the
   attackers keep trying to hold ``--stalls`` bodies open. The attackers come from other
   loopback addresses than the client (127.0.0.1): the login throttle counts per address,
   and an attacker is not on the user's machine. Guesses and stalls each have their own
   (``GUESSER_ADDRESS``, ``STALLER_ADDRESS``), or the guesses would block the stallers' own
   logins once their cached credentials lapse;
3. with ``--idle-after``, the workload once more with the attackers gone: how far the machine
   drifted meanwhile (the goal compares with phase 1).

The well-behaved client is raw ``httpx`` (one kept-alive connection, Basic auth, like
``LibrarianClient``) that waits out each 429's ``Retry-After`` and sends again, for up to
``MAX_RETRY_WAIT`` seconds per request (longer than the login throttle's 300 s cap). The
latency of a request is from its first send to its final answer, waits included. Measured per
phase:

* **requests**: every stage, PUT, commit and search request (4 per upload, a fixed number
  per phase); status polls are reported apart (how many there are depends on how fast
  ingest is, and they are cheap: counting them would dilute the p95);
* **uploads**: one upload end to end (stage sent -> the poll that saw ``stored``);
* **searches**: the search request alone.

Goal (issue): the hostile p95 <= 2 x the idle p95, measured in the same run, and nothing
lost. A round passes if all three ratios are <= 2 and every well-behaved upload ended
``stored``, is catalogued with its checksum and size (``GET /files/{name}``), its stored file
hashes to it and the search after it found it; and no stalled upload is catalogued or in the
store (their staging is reported, then they are cancelled). Each phase also records where the
machine's CPU went (the librarian's processes, this benchmark, everything else: a test run
elsewhere shows there), the API process's threads and a timeline of the client's latencies.
Results go to ``results/hostile.json``, all rounds in one file.

Usage: python benchmarks/bench_hostile.py [--quick] [--results FILE] [--rounds 1]
       [--idle-after] [--uploads 100] [--stalls 100] [--wrong 300] [--wrong-parallel 60]
       [--attackers 4]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import socket
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests.live, when run as a script from anywhere

from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.stats import percentile, r3  # noqa: E402
from librarian_dagster.client import file_query  # noqa: E402
from librarian_dagster.settings import ApiSettings, SecuritySettings  # noqa: E402
from librarian_dagster.states import FINAL_STATUSES, TransferStatus  # noqa: E402
from librarian_dagster.storage.checksums import (  # noqa: E402
    DEFAULT_ALGORITHM,
    Checksum,
    hash_path,
    new_hasher,
)
from librarian_dagster.storage.posix import remove_if_present  # noqa: E402
from librarian_dagster.wire import API_PREFIX, MAX_PAGE  # noqa: E402
from tests.conftest import FAST_ARGON2  # noqa: E402
from tests.live import ADMIN_PASSWORD, LiveLibrarian  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results" / "hostile.json"
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
GOOD_USER, GOOD_PASSWORD = "alice", "password-alice-good"
ATTACKER_PASSWORD = "password-attacker"
# The attackers' source addresses (the server and the well-behaved client are on 127.0.0.1).
# Two, because the login throttle also counts per address: from one address the wrong
# passwords would block the stallers' own logins once their cached credentials expire.
GUESSER_ADDRESS = "127.0.0.2"
STALLER_ADDRESS = "127.0.0.3"
FILE_SIZE = KIB
STALL_DECLARED = MIB  # Content-Length of a stalled body
STALL_SENT = 16  # bytes of it actually sent
POLL = 0.02
MAX_RETRY_WAIT = 400.0  # per request: Retry-After waits beyond this are an error
GOAL_RATIO = 2.0
WARMUPS = 2
TIMELINE_STEP = 10.0  # seconds per row of the phases' timelines


# -- small helpers -----------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": r3(min(values)),
        "p50": r3(statistics.median(values)),
        "p95": r3(percentile(values, 95)),
        "p99": r3(percentile(values, 99)),
        "max": r3(max(values)),
        "mean": r3(statistics.fmean(values)),
    }


def checksum_of(data: bytes) -> Checksum:
    hasher = new_hasher(DEFAULT_ALGORITHM)
    hasher.update(data)
    return Checksum(DEFAULT_ALGORITHM, hasher.hexdigest())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the site ------------------------------------------------------------------------------


class ProductionLibrarian(LiveLibrarian):
    """``LiveLibrarian`` with the production argon2 parameters (the ``[security]`` defaults).

    ``LiveLibrarian.write_config`` writes the tests' cheap argon2 (``FAST_ARGON2``); its lines
    are taken out again, leaving an empty ``[security]`` table.
    """

    def write_config(self) -> None:
        super().write_config()
        cheap = {f"{key} = {value}" for key, value in FAST_ARGON2.items()}
        lines = self.config.read_text().splitlines()
        assert cheap <= set(lines), "LiveLibrarian's configuration changed: check [security]"
        self.config.write_text("\n".join(line for line in lines if line not in cheap) + "\n")


def argon2_parameters(catalogue: Path) -> dict[str, str]:
    """The parameters in each user's stored hash (``$argon2id$v=19$m=...,t=...,p=...$``)."""
    with contextlib.closing(sqlite3.connect(catalogue)) as connection:
        rows = connection.execute("SELECT name, password_hash FROM users").fetchall()
    return {name: "$".join(hashed.split("$")[:4]) for name, hashed in rows}


def api_process(live: LiveLibrarian) -> int | None:
    return live.child_pids().get("api")


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_threads(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def system_busy_seconds() -> float:
    """CPU time all CPUs spent not idle since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of ``root`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(process_cpu_seconds(pid) or 0.0 for pid in tree)


@dataclass
class CpuSnapshot:
    """Where the machine's CPU went: the librarian's processes, this benchmark, the rest."""

    at: float
    busy: float
    api: float | None
    librarian: float
    benchmark: float

    @classmethod
    def take(cls, live: LiveLibrarian, api_pid: int | None) -> CpuSnapshot:
        assert live.process is not None
        times = os.times()
        return cls(
            time.monotonic(),
            system_busy_seconds(),
            process_cpu_seconds(api_pid),
            tree_cpu_seconds(live.process.pid),
            times.user + times.system,
        )

    def until(self, later: CpuSnapshot) -> dict[str, float | None]:
        busy = later.busy - self.busy
        librarian = later.librarian - self.librarian
        benchmark = later.benchmark - self.benchmark
        api = None if self.api is None or later.api is None else later.api - self.api
        return {
            "wall": r3(later.at - self.at),
            "all_cpus_busy": r3(busy),
            "librarian_processes": r3(librarian),
            "of_which_api_process": r3(api),
            "this_benchmark": r3(benchmark),
            # other work on the machine (another test run, say): a large value here means
            # the phase was disturbed
            "other": r3(busy - librarian - benchmark),
        }


class Sampler:
    """Once a second: the API process's thread count and CPU time, the 1-minute load."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int | None, float | None, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                (
                    time.monotonic(),
                    process_threads(self.pid),
                    process_cpu_seconds(self.pid),
                    os.getloadavg()[0],
                )
            )
            self._stop.wait(1.0)

    def between(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        threads = [s[1] for s in inside if s[1] is not None]
        load = [s[3] for s in inside]
        return {
            "api_threads_max": max(threads, default=None),
            "api_threads_median": statistics.median(threads) if threads else None,
            "loadavg_1min_max": r3(max(load, default=None)),
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# -- the well-behaved client -----------------------------------------------------------------


@dataclass
class Request:
    kind: str  # stage | put | commit | poll | search | verify
    start: float
    end: float
    status: int
    attempts: int = 1
    waited: float = 0.0  # seconds spent honouring Retry-After

    @property
    def latency(self) -> float:
        return self.end - self.start


class ClientFailed(Exception):
    def __init__(self, kind: str, response: httpx.Response | None, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.status = response.status_code if response is not None else None


class GoodClient:
    """One user's kept-alive connection; a 429 is waited out (``Retry-After``) and retried."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}{API_PREFIX}",
            auth=(user, password),
            timeout=httpx.Timeout(600.0, connect=10.0),
        )
        self.log: list[Request] = []
        self.throttled: list[tuple[str, float, float]] = []  # (kind, when, Retry-After)

    def close(self) -> None:
        self.http.close()

    def call(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        start = time.monotonic()
        attempts, waited = 0, 0.0
        while True:
            attempts += 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as error:
                self.log.append(Request(kind, start, time.monotonic(), 0, attempts, waited))
                raise ClientFailed(kind, None, f"{type(error).__name__}: {error}") from error
            if response.status_code != 429:
                break
            retry_after = float(response.headers.get("retry-after", "1"))
            self.throttled.append((kind, time.monotonic(), retry_after))
            if waited + retry_after > MAX_RETRY_WAIT:
                break
            print(f"    {kind} {path}: 429, waiting {retry_after:g} s ({response.text[:120]})")
            time.sleep(retry_after)
            waited += retry_after
        self.log.append(
            Request(kind, start, time.monotonic(), response.status_code, attempts, waited)
        )
        if response.is_error:
            raise ClientFailed(kind, response, f"{response.status_code} {response.text[:300]}")
        return response


@dataclass
class Upload:
    name: str
    checksum: Checksum
    upload_id: int | None = None
    start: float = 0.0
    end: float | None = None
    status: str | None = None
    error: str | None = None
    found_by_search: bool = False

    @property
    def latency(self) -> float | None:
        return None if self.end is None else self.end - self.start


def upload_and_search(client: GoodClient, name: str, data: bytes) -> Upload:
    """One 1 KiB upload over HTTP, polled until final, then a search for its name."""
    upload = Upload(name, checksum_of(data), start=time.monotonic())
    try:
        info = client.call(
            "stage", "POST", "/uploads", json={"name": name, "size": len(data)}
        ).json()
        upload.upload_id = info["upload_id"]
        client.call(
            "put",
            "PUT",
            f"/uploads/{upload.upload_id}/content",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        client.call(
            "commit",
            "POST",
            f"/uploads/{upload.upload_id}/commit",
            json={"checksum": str(upload.checksum)},
        )
        deadline = time.monotonic() + 600
        while True:
            status = client.call("poll", "GET", f"/uploads/{upload.upload_id}").json()["status"]
            if status in FINAL_STATUSES or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        upload.end = time.monotonic()
        upload.status = status
        params = file_query(name=name, page_size=100).params()
        files = client.call("search", "GET", "/files", params=params).json()["files"]
        upload.found_by_search = [f["name"] for f in files] == [name]
    except ClientFailed as error:
        upload.error = str(error)
        print(f"    {name}: {error}")
    return upload


def workload(client: GoodClient, prefix: str, count: int) -> list[Upload]:
    uploads = []
    for i in range(count):
        uploads.append(upload_and_search(client, f"{prefix}/{i:04d}.bin", os.urandom(FILE_SIZE)))
        if (i + 1) % 25 == 0:
            print(f"  {prefix}: {i + 1}/{count} uploads")
    return uploads


# -- the attackers ---------------------------------------------------------------------------


@dataclass
class StallAttempt:
    slot: int
    opened: float
    ended: float | None = None
    status: int | None = None  # the server's answer, None if it never answered
    outcome: str = "held"  # held (open at the phase's end) | answered | closed | error
    retry_after: float | None = None
    detail: str = ""


class Staller(threading.Thread):
    """Keeps one stalled upload body open: PUT with a Content-Length it never finishes.

    After the server ends an attempt it tries again: after a 429 once ``Retry-After`` has
    passed, at once after anything else (a 408 when the idle body was cut off).
    """

    def __init__(
        self,
        slot: int,
        upload_id: int,
        user: str,
        port: int,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"staller-{slot}", daemon=True)
        self.slot = slot
        self.stop = stop
        self.port = port
        self.attempts: list[StallAttempt] = []
        self.head = (
            f"PUT {API_PREFIX}/uploads/{upload_id}/content HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: {basic(user, ATTACKER_PASSWORD)}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {STALL_DECLARED}\r\n"
            "\r\n"
        ).encode() + b"\0" * STALL_SENT

    def run(self) -> None:
        while not self.stop.is_set():
            attempt = self.attempt()
            self.attempts.append(attempt)
            if self.stop.is_set():
                break
            if attempt.status == 429:
                self.stop.wait(attempt.retry_after or 1.0)
            elif attempt.outcome == "error":
                self.stop.wait(1.0)

    def attempt(self) -> StallAttempt:
        attempt = StallAttempt(self.slot, time.monotonic())
        try:
            sock = socket.create_connection(
                ("127.0.0.1", self.port), timeout=10, source_address=(STALLER_ADDRESS, 0)
            )
        except OSError as error:
            attempt.outcome, attempt.detail, attempt.ended = "error", str(error), time.monotonic()
            return attempt
        try:
            sock.sendall(self.head)
            sock.settimeout(1.0)
            received = b""
            head: list[str] = []
            body_length = 0
            while not self.stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    attempt.outcome = "closed"
                    break
                received += data
                if not head and b"\r\n\r\n" in received:
                    attempt.ended = time.monotonic()  # the answer's head: the server said no
                    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                    for line in head[1:]:
                        key, _, value = line.partition(":")
                        if key.strip().lower() == "retry-after":
                            attempt.retry_after = float(value.strip())
                        if key.strip().lower() == "content-length":
                            body_length = int(value.strip())
                if head and len(received.split(b"\r\n\r\n", 1)[1]) >= body_length:
                    attempt.outcome = "answered"
                    break
            attempt.ended = attempt.ended or time.monotonic()
            if head:
                attempt.status = int(head[0].split()[1])
                body = received.split(b"\r\n\r\n", 1)[1].decode("utf-8", "replace")
                attempt.detail = f"{head[0]} {body[:200]}"
        except OSError as error:
            attempt.outcome, attempt.detail, attempt.ended = "error", str(error), time.monotonic()
        finally:
            sock.close()
        return attempt


@dataclass
class WrongLogin:
    target: str
    start: float
    end: float
    status: int


def wrong_password_flood(url: str, count: int, parallel: int) -> list[WrongLogin]:
    """``count`` GET /files with wrong passwords, ``parallel`` at a time, back to back.

    Half name the well-behaved user, the rest ``admin`` or a name nobody has. Each worker
    keeps its connection (from ``GUESSER_ADDRESS``); Retry-After is ignored.
    """
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> WrongLogin:
        if not hasattr(local, "http"):
            local.http = httpx.Client(
                base_url=f"{url}{API_PREFIX}",
                transport=httpx.HTTPTransport(local_address=GUESSER_ADDRESS),
                timeout=httpx.Timeout(600.0, connect=10.0),
            )
            clients.append(local.http)
        target = GOOD_USER if i % 2 == 0 else ("admin" if i % 4 == 1 else f"nobody{i}")
        start = time.monotonic()
        try:
            status = local.http.get("/files", auth=(target, f"wrong-{i}")).status_code
        except httpx.HTTPError:
            status = 0
        return WrongLogin(target, start, time.monotonic(), status)

    with ThreadPoolExecutor(parallel, thread_name_prefix="wrong") as pool:
        results = list(pool.map(one, range(count)))
    for client in clients:
        client.close()
    return results


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    start: float
    end: float
    uploads: list[Upload]
    requests: list[Request]
    cpu: dict[str, float | None]
    load: dict[str, Any] = field(default_factory=dict)
    throttled: list[tuple[str, float, float]] = field(default_factory=list)

    def latencies(self, kinds: set[str]) -> list[float]:
        return [r.latency for r in self.requests if r.kind in kinds]

    def timeline(self, step: float = TIMELINE_STEP) -> list[dict[str, Any]]:
        """The good client's requests by when they started: each ``step`` seconds of the phase,
        how many (all kinds, and the goal's), their p50 and the slowest (a wait for a 429's
        Retry-After counts where the request started)."""
        buckets: dict[int, list[Request]] = collections.defaultdict(list)
        for request in self.requests:
            buckets[int((request.start - self.start) // step)].append(request)
        rows = []
        for index in sorted(buckets):
            inside = buckets[index]
            goal = [r.latency for r in inside if r.kind in GOAL_KINDS]
            rows.append(
                {
                    "t": index * step,
                    "n": len(inside),
                    "p50": r3(statistics.median(r.latency for r in inside)),
                    "max": r3(max(r.latency for r in inside)),
                    "goal_n": len(goal),
                    "goal_p50": r3(statistics.median(goal)) if goal else None,
                    "goal_max": r3(max(goal)) if goal else None,
                }
            )
        return rows

    def report(self) -> dict[str, Any]:
        uploads = [u.latency for u in self.uploads if u.latency is not None]
        by_kind = {
            kind: summary(self.latencies({kind}))
            for kind in ("stage", "put", "commit", "poll", "search")
        }
        statuses = collections.Counter(str(r.status) for r in self.requests)
        return {
            "seconds": r3(self.end - self.start),
            REQUESTS: summary(self.latencies(GOAL_KINDS)),
            UPLOADS: summary(uploads),
            SEARCHES: by_kind["search"],
            "by_request": by_kind,
            "request_statuses": dict(sorted(statuses.items())),
            "requests_retried_after_429": sum(1 for r in self.requests if r.attempts > 1),
            "retry_after_waited_seconds": r3(sum(r.waited for r in self.requests)),
            "throttled_answers": [
                {"kind": kind, "at": r3(when - self.start), "retry_after": wait}
                for kind, when, wait in self.throttled
            ],
            "timeline": self.timeline(),
            "slowest_requests": [
                {
                    "kind": r.kind,
                    "at": r3(r.start - self.start),
                    "seconds": r3(r.latency),
                    "attempts": r.attempts,
                }
                for r in sorted(self.requests, key=lambda r: r.latency, reverse=True)[:10]
            ],
            "cpu_seconds": self.cpu,
            **self.load,
        }


GOAL_KINDS = {"stage", "put", "commit", "search"}
REQUESTS = "requests (stage, put, commit, search)"
UPLOADS = "uploads (stage -> stored seen)"
SEARCHES = "searches"


def run_phase(
    label: str,
    client: GoodClient,
    count: int,
    live: LiveLibrarian,
    pid: int | None,
    sampler: Sampler,
) -> Phase:
    print(f"{label}: {count} uploads + searches")
    first_request = len(client.log)
    first_throttled = len(client.throttled)
    cpu = CpuSnapshot.take(live, pid)
    start = time.monotonic()
    uploads = workload(client, f"good/{label}", count)
    end = time.monotonic()
    return Phase(
        label,
        start,
        end,
        uploads,
        client.log[first_request:],
        cpu.until(CpuSnapshot.take(live, pid)),
        sampler.between(start, end),
        client.throttled[first_throttled:],
    )


def stage_stalls(url: str, attackers: list[str], stalls: int) -> list[tuple[int, str, str]]:
    """Stage the stalled uploads (untimed setup): (upload id, user, staging path) each."""
    staged = []
    clients = {
        user: httpx.Client(
            base_url=f"{url}{API_PREFIX}",
            auth=(user, ATTACKER_PASSWORD),
            transport=httpx.HTTPTransport(local_address=STALLER_ADDRESS),
            timeout=60,
        )
        for user in attackers
    }
    try:
        for i in range(stalls):
            user = attackers[i % len(attackers)]
            response = clients[user].post(
                "/uploads", json={"name": f"attack/{user}/{i:04d}.bin", "size": STALL_DECLARED}
            )
            response.raise_for_status()
            info = response.json()
            staged.append((info["upload_id"], user, info["staging_path"]))
    finally:
        for client in clients.values():
            client.close()
    return staged


def stall_report(stallers: list[Staller], phase_start: float) -> dict[str, Any]:
    attempts = [a for s in stallers for a in s.attempts]
    first = [s.attempts[0] for s in stallers if s.attempts]

    def outcome(a: StallAttempt) -> str:
        if a.status == 429:  # which limit said no
            if "failed logins" in a.detail:
                return "429 login throttle"
            if "upload bodies at once" in a.detail:
                return "429 per-user cap"
        if a.status is not None:
            return str(a.status)
        return a.outcome

    cut = [a.ended - a.opened for a in attempts if a.status == 408 and a.ended]
    cut_at = [a.ended - phase_start for a in attempts if a.status == 408 and a.ended]
    refused = [a.ended - a.opened for a in attempts if a.status == 429 and a.ended]
    return {
        "slots": len(stallers),
        "first_attempt": {
            # admitted: the body was taken (answered 408 when cut off, or still held at the
            # end of the phase); refused: 429 at once (the per-user cap)
            "admitted": sum(1 for a in first if a.status == 408 or a.outcome == "held"),
            "refused_429": sum(1 for a in first if a.status == 429),
            "outcomes": dict(collections.Counter(outcome(a) for a in first)),
        },
        "all_attempts": len(attempts),
        "all_outcomes": dict(collections.Counter(outcome(a) for a in attempts)),
        "held_at_phase_end": sum(1 for a in attempts if a.outcome == "held"),
        "seconds_to_408": summary(cut),
        "seconds_to_429": summary(refused),
        "first_408_at": r3(min(cut_at, default=None)),
        "examples": {outcome(a): a.detail[:160] for a in reversed(attempts) if a.detail},
        # answers by when they came, per TIMELINE_STEP seconds of the phase (t < 0: before
        # the well-behaved client started)
        "answers_timeline": [
            {"t": t * TIMELINE_STEP, **dict(counts)}
            for t, counts in sorted(
                _bucketed(
                    ((a.ended - phase_start, outcome(a)) for a in attempts if a.ended and a.status),
                ).items()
            )
        ],
        "errors": [a.detail for a in attempts if a.outcome == "error"][:5],
    }


def _bucketed(events: Iterator[tuple[float, str]]) -> dict[int, collections.Counter[str]]:
    buckets: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for at, what in events:
        buckets[math.floor(at / TIMELINE_STEP)][what] += 1
    return buckets


def wrong_report(results: list[WrongLogin], phase_start: float) -> dict[str, Any]:
    by_target: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for result in results:
        group = result.target if result.target in (GOOD_USER, "admin") else "nobody*"
        by_target[group][str(result.status)] += 1
    statuses = collections.Counter(str(r.status) for r in results)
    return {
        "requests": len(results),
        "statuses": dict(sorted(statuses.items())),
        "answered_401": statuses.get("401", 0),
        "answered_429": statuses.get("429", 0),
        "by_target": {k: dict(sorted(v.items())) for k, v in sorted(by_target.items())},
        "started_at": r3(min(r.start for r in results) - phase_start),
        "ended_at": r3(max(r.end for r in results) - phase_start),
        "latency_401": summary([r.end - r.start for r in results if r.status == 401]),
        "latency_429": summary([r.end - r.start for r in results if r.status == 429]),
    }


def during(phase: Phase, window: tuple[float, float]) -> dict[str, Any]:
    """The goal's requests that started inside / outside a window of the phase."""
    start, end = window
    inside = [r.latency for r in phase.requests if r.kind in GOAL_KINDS and start <= r.start < end]
    outside = [
        r.latency for r in phase.requests if r.kind in GOAL_KINDS and not start <= r.start < end
    ]
    polls = [r.latency for r in phase.requests if r.kind == "poll" and start <= r.start < end]
    return {
        "window": [r3(start - phase.start), r3(end - phase.start)],
        "inside": summary(inside),
        "outside": summary(outside),
        "polls_inside": summary(polls),
    }


# -- checks afterwards --------------------------------------------------------------------


def check_uploads(client: GoodClient, uploads: list[Upload]) -> dict[str, Any]:
    """Each upload: stored, catalogued with its checksum, and the stored file hashes to it."""
    problems: list[str] = []
    stored = 0
    for upload in uploads:
        if upload.error or upload.status != TransferStatus.STORED.value:
            problems.append(f"{upload.name}: status {upload.status}, error {upload.error}")
            continue
        try:
            info = client.call("verify", "GET", f"/files/{upload.name}").json()
        except ClientFailed as error:
            problems.append(f"{upload.name}: {error}")
            continue
        if info["checksum"] != str(upload.checksum) or info["size"] != FILE_SIZE:
            problems.append(f"{upload.name}: catalogued {info['checksum']}, {info['size']} B")
            continue
        paths = [Path(i["path"]) for i in info["instances"] if i["available"]]
        if len(paths) != 1 or hash_path(paths[0], DEFAULT_ALGORITHM) != upload.checksum:
            problems.append(f"{upload.name}: stored instances {paths} do not hash to it")
            continue
        if not upload.found_by_search:
            problems.append(f"{upload.name}: stored, but the search after it did not find it")
            continue
        stored += 1
    return {"uploads": len(uploads), "stored_and_verified": stored, "problems": problems[:20]}


def check_stalls(url: str, store_root: Path, staged: list[tuple[int, str, str]]) -> dict[str, Any]:
    """What the stalled uploads left: catalogue, store, staging; then cancel them."""
    attack_dir = store_root / "store" / "attack"
    attack_files = [str(path) for path in attack_dir.rglob("*")] if attack_dir.exists() else []
    leftovers = [Path(path) for _, _, path in staged if Path(path).exists()]
    statuses: collections.Counter[str] = collections.Counter()
    catalogued: list[str] = []
    cancelled = 0
    users = sorted({user for _, user, _ in staged})
    for user in users:
        with httpx.Client(
            base_url=f"{url}{API_PREFIX}", auth=(user, ATTACKER_PASSWORD), timeout=60
        ) as client:
            found = client.get("/files", params={"name": f"attack/{user}/*", "limit": MAX_PAGE})
            found.raise_for_status()  # an error must not pass for "none catalogued"
            catalogued.extend(f["name"] for f in found.json()["files"])
            for upload_id, owner, _ in staged:
                if owner != user:
                    continue
                statuses[client.get(f"/uploads/{upload_id}").json()["status"]] += 1
                if client.delete(f"/uploads/{upload_id}").status_code == 204:
                    cancelled += 1
    staging_dirs_left = [Path(path).parent for _, _, path in staged if Path(path).parent.exists()]
    return {
        "catalogued_files": catalogued,
        "files_in_store": attack_files,
        "upload_statuses_after_phase": dict(statuses),
        "staging_data_files_after_phase": len(leftovers),
        "staging_data_bytes_after_phase": sum(p.stat().st_size for p in leftovers),
        "cancelled_afterwards": cancelled,
        "staging_dirs_left_after_cancel": len(staging_dirs_left),
    }


# -- main ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import importlib.metadata

    import dagster

    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dagster": dagster.__version__,
        "argon2-cffi": importlib.metadata.version("argon2-cffi"),
        "httpx": httpx.__version__,
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def argon2_seconds() -> float:
    """One wrong-password verification with the production parameters, in this process."""
    from argon2 import PasswordHasher
    from argon2.exceptions import VerificationError

    security = SecuritySettings()
    hasher = PasswordHasher(
        time_cost=security.argon2_time_cost,
        memory_cost=security.argon2_memory_cost_kib,
        parallelism=security.argon2_parallelism,
    )
    hashed = hasher.hash("right")
    best = math.inf
    for _ in range(5):
        start = time.monotonic()
        with contextlib.suppress(VerificationError):
            hasher.verify(hashed, "wrong")
        best = min(best, time.monotonic() - start)
    return best


@contextlib.contextmanager
def live_site(work: Path, attackers: int) -> Iterator[tuple[ProductionLibrarian, list[str]]]:
    live = ProductionLibrarian(work / "site")
    live.directory.mkdir(parents=True)
    started = time.monotonic()
    try:  # stop() also after a failed start(): serve may be up with a broken API
        live.start()
        print(f"librarian serve up in {time.monotonic() - started:.1f} s ({live.api_url})")
        names = [f"mallory{i}" for i in range(attackers)]
        with httpx.Client(auth=("admin", ADMIN_PASSWORD), timeout=60) as admin:
            for name, password in [(GOOD_USER, GOOD_PASSWORD)] + [
                (n, ATTACKER_PASSWORD) for n in names
            ]:
                admin.post(
                    f"{live.api_url}{API_PREFIX}/users",
                    json={"name": name, "password": password, "level": "read_append"},
                ).raise_for_status()
        yield live, names
    finally:
        live.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--uploads", type=int, help="well-behaved uploads per phase (100)")
    parser.add_argument("--stalls", type=int, help="stalled uploads (100)")
    parser.add_argument("--wrong", type=int, help="wrong-password requests (300)")
    parser.add_argument("--wrong-parallel", type=int, help="of them at once (60)")
    parser.add_argument("--attackers", type=int, default=4, help="users holding the stalls")
    parser.add_argument(
        "--idle-after", action="store_true", help="a third phase, idle again, for comparison"
    )
    parser.add_argument("--rounds", type=int, default=1, help="independent rounds (new site)")
    args = parser.parse_args()
    defaults = (20, 20, 60, 20) if args.quick else (100, 100, 300, 60)
    for key, value in zip(("uploads", "stalls", "wrong", "wrong_parallel"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, value)
    load_before = os.getloadavg()[0]
    git_at_start = git_state()
    argon2_alone = argon2_seconds()
    print(f"one argon2 verification here (production parameters): {argon2_alone:.3f} s")
    rounds = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"== round {number} of {args.rounds}")
        work = WORK / f"hostile-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        load = os.getloadavg()[0]
        git_now = git_state()
        try:
            with live_site(work, args.attackers) as (live, attackers):
                measured = measure(live, attackers, args)
        finally:
            remove_if_present(work)  # also through read-only books
        rounds.append(
            {
                "round": number,
                "date": started,
                "loadavg_1min": [r3(load), r3(os.getloadavg()[0])],
                "git": git_now,  # others commit meanwhile: what this round's serve ran
                **measured,
            }
        )
        print_table(rounds[-1])
    result = {
        # Other work on the machine skews the numbers: a 1-minute load well above what the
        # benchmark itself causes means the run was disturbed (see each phase's cpu_seconds).
        "machine": {**machine(), "loadavg_1min": [r3(load_before), r3(os.getloadavg()[0])]},
        "parameters": {
            k: (str(v.relative_to(ROOT)) if v.is_relative_to(ROOT) else str(v))
            if isinstance(v, Path)
            else v
            for k, v in vars(args).items()
        },
        "git": git_at_start,
        "argon2_verify_seconds_in_benchmark_process": r3(argon2_alone),
        "summary": [
            {
                "round": r["round"],
                **{key: goal["ratio"] for key, goal in r["goals"].items()},
                "nothing_lost": r["nothing_lost"]["pass"],
                "pass": r["goal"]["pass"],
            }
            for r in rounds
        ],
        "rounds_passed": sum(1 for r in rounds if r["goal"]["pass"]),
        "rounds": rounds,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    if args.rounds > 1:
        for line in result["summary"]:
            print(line)
    print(f"passed {result['rounds_passed']} of {args.rounds} rounds; wrote {args.results}")


def measure(live: ProductionLibrarian, attackers: list[str], args: argparse.Namespace) -> dict:
    url = live.api_url
    store_root = live.directory / "stores" / "main"
    pid = api_process(live)
    sampler = Sampler(pid)
    client = GoodClient(url, GOOD_USER, GOOD_PASSWORD)
    try:
        site = {
            "kind": "LiveLibrarian: SQLite catalogue, SQLite Dagster storage, one local store",
            "argon2_in_stored_hashes": argon2_parameters(live.directory / "catalogue.sqlite"),
            "security_defaults": SecuritySettings().model_dump(),
            "api_defaults": {
                k: v for k, v in ApiSettings().model_dump().items() if k not in ("host", "port")
            },
            "good_client_address": "127.0.0.1",
            "wrong_password_address": GUESSER_ADDRESS,
            "stalled_uploads_address": STALLER_ADDRESS,
        }
        # The first commit pays one-off costs: not timed (as in bench_ingest).
        warm = workload(client, "good/warm-up", WARMUPS)
        idle = run_phase("idle", client, args.uploads, live, pid, sampler)
        print(f"  idle p95 of requests: {percentile(idle.latencies(GOAL_KINDS), 95):.3f} s")

        staged = stage_stalls(url, attackers, args.stalls)
        stop = threading.Event()
        stallers = [
            Staller(i, upload_id, user, live.api_port, stop)
            for i, (upload_id, user, _) in enumerate(staged)
        ]
        hostile_start = time.monotonic()
        for staller in stallers:
            staller.start()
        time.sleep(2)  # the stalls are in place (admitted or refused) before the rest starts
        threads_with_stalls = process_threads(pid)
        with ThreadPoolExecutor(1) as flood:
            wrong_future = flood.submit(wrong_password_flood, url, args.wrong, args.wrong_parallel)
            hostile = run_phase("hostile", client, args.uploads, live, pid, sampler)
            wrong = wrong_future.result()
        in_staging = [Path(path) for _, _, path in staged if Path(path).exists()]
        staging_during = {
            "data_files": len(in_staging),
            "bytes": sum(p.stat().st_size for p in in_staging),
        }
        stop.set()
        for staller in stallers:
            staller.join()
        hostile_end = time.monotonic()
        time.sleep(3)  # the server notices the closed connections and cleans up
        stalls = stall_report(stallers, hostile.start)
        stalls["api_threads_2s_after_start"] = threads_with_stalls
        stalls["seconds_open_before_workload"] = r3(hostile.start - hostile_start)
        stalls["staging_at_phase_end_before_closing"] = staging_during
        stalls["left_behind"] = check_stalls(url, store_root, staged)
        wrong_summary = wrong_report(wrong, hostile.start)
        flood_window = (
            min(r.start for r in wrong),
            max(r.end for r in wrong),
        )
        after = None
        if args.idle_after:  # the same again with the attackers gone: the machine's drift
            after = run_phase("idle-after", client, args.uploads, live, pid, sampler)
        verified = check_uploads(
            client, idle.uploads + hostile.uploads + (after.uploads if after else [])
        )
        warm_ok = check_uploads(client, warm)
    finally:
        client.close()
        sampler.close()
    idle_report, hostile_report = idle.report(), hostile.report()
    phases = {"idle": idle_report, "hostile": hostile_report}
    if after is not None:
        phases["idle-after"] = after.report()
    goals = {}
    for key in (REQUESTS, UPLOADS, SEARCHES):
        idle_p95 = idle_report[key]["p95"]
        hostile_p95 = hostile_report[key]["p95"]
        ratio = hostile_p95 / idle_p95 if idle_p95 else None
        goals[key] = {
            "idle_p95": idle_p95,
            "hostile_p95": hostile_p95,
            "ratio": r3(ratio),
            "limit": GOAL_RATIO,
            "pass": ratio is not None and ratio <= GOAL_RATIO,
        }
        if after is not None:
            after_p95 = phases["idle-after"][key]["p95"]
            goals[key]["idle_after_p95"] = after_p95
            goals[key]["ratio_to_idle_after"] = r3(hostile_p95 / after_p95 if after_p95 else None)
    lost = verified["uploads"] - verified["stored_and_verified"]
    left = stalls["left_behind"]
    nothing_lost = {
        "pass": lost == 0 and not left["catalogued_files"] and not left["files_in_store"],
        "good_uploads": verified,
        "warm_up_uploads": warm_ok,
        "stalled_uploads_in_catalogue": len(left["catalogued_files"]),
        "stalled_uploads_in_store": len(left["files_in_store"]),
    }
    return {
        "site": site,
        "method": {
            "good_client": "raw httpx, one kept-alive connection from 127.0.0.1; 429 waited out",
            "goal_requests": "stage, PUT content, commit, search: 4 per upload; polls apart",
            "poll_interval_seconds": POLL,
            "file_size": FILE_SIZE,
            "stall": f"PUT Content-Length {STALL_DECLARED}, {STALL_SENT} bytes sent, then none",
            "wrong_password_targets": f"half {GOOD_USER!r}, a quarter 'admin', a quarter unknown",
        },
        "phases": phases,
        "hostile_load": {
            "seconds": r3(hostile_end - hostile_start),
            "stalled_uploads": stalls,
            "wrong_passwords": wrong_summary,
            "good_requests_during_wrong_password_flood": during(hostile, flood_window),
        },
        "goals": goals,
        "goal": {
            "description": (
                "hostile p95 <= 2 x idle p95, for the requests, the whole uploads and the "
                "searches alike; nothing lost"
            ),
            "ratio_requests": goals[REQUESTS]["ratio"],
            "worst_ratio": max(g["ratio"] or math.inf for g in goals.values()),
            "pass": all(g["pass"] for g in goals.values()) and nothing_lost["pass"],
        },
        "nothing_lost": nothing_lost,
    }


def print_table(result: dict[str, Any]) -> None:
    idle, hostile = result["phases"]["idle"], result["phases"]["hostile"]
    print()
    print(f"{'':40} {'idle p50/p95/max':>24} {'hostile p50/p95/max':>24} {'p95 ratio':>9}")
    for key, goal in result["goals"].items():
        a, b = idle[key], hostile[key]
        print(
            f"{key:40} {a['p50']:7.3f} {a['p95']:7.3f} {a['max']:8.3f} "
            f"{b['p50']:7.3f} {b['p95']:7.3f} {b['max']:8.3f} {goal['ratio']:8.2f}"
            f"  {'pass' if goal['pass'] else 'FAIL'}"
        )
    for kind in ("stage", "put", "commit", "poll"):
        a, b = idle["by_request"][kind], hostile["by_request"][kind]
        print(
            f"  {kind:38} {a['p50']:7.3f} {a['p95']:7.3f} {a['max']:8.3f} "
            f"{b['p50']:7.3f} {b['p95']:7.3f} {b['max']:8.3f}"
        )
    if "idle-after" in result["phases"]:
        after = result["phases"]["idle-after"]
        print(
            "idle-after p50/p95/max: "
            + "; ".join(
                f"{key.split(' ')[0]} {after[key]['p50']:.3f}/{after[key]['p95']:.3f}/"
                f"{after[key]['max']:.3f}"
                for key in result["goals"]
            )
        )
    for label, phase in result["phases"].items():
        cpu = phase["cpu_seconds"]
        print(
            f"{label}: {cpu['wall']} s; CPU s: librarian {cpu['librarian_processes']} "
            f"(API {cpu['of_which_api_process']}), benchmark {cpu['this_benchmark']}, "
            f"other processes {cpu['other']}"
        )
    stalls = result["hostile_load"]["stalled_uploads"]
    wrong = result["hostile_load"]["wrong_passwords"]
    print(
        f"stalled uploads: {stalls['first_attempt']['admitted']} admitted, "
        f"{stalls['first_attempt']['refused_429']} refused 429 (first attempts); "
        f"all attempts {stalls['all_outcomes']}"
    )
    print(
        f"wrong passwords: {wrong['answered_401']} x 401, {wrong['answered_429']} x 429 "
        f"{wrong['by_target']}"
    )
    print(
        f"good client: idle {idle['request_statuses']}, hostile {hostile['request_statuses']}, "
        f"{hostile['requests_retried_after_429']} retried after 429 "
        f"({hostile['retry_after_waited_seconds']} s waited)"
    )
    lost = result["nothing_lost"]
    print(
        f"nothing lost: {lost['good_uploads']['stored_and_verified']}/"
        f"{lost['good_uploads']['uploads']} stored and verified; stalled uploads in catalogue "
        f"{lost['stalled_uploads_in_catalogue']}, in store {lost['stalled_uploads_in_store']}; "
        f"staging after the phase: {stalls['left_behind']['staging_data_files_after_phase']} "
        f"data files -> {'pass' if lost['pass'] else 'FAIL'}"
    )
    goal = result["goal"]
    print(
        f"GOAL hostile/idle p95: requests {goal['ratio_requests']}, worst {goal['worst_ratio']} "
        f"(<= 2), nothing lost {lost['pass']}: {'PASS' if goal['pass'] else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
