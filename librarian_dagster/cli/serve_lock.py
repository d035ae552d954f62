"""One ``librarian serve`` per data dir, and no orphans of a previous one.

``<data_dir>/serve.lock`` is held with ``flock`` for as long as ``serve`` runs: a second
``serve`` on the same data dir is refused in one line (two would share stores, staging and
Dagster's storage). The file records the process groups of the children (pid and the kernel's
start time of each, so a recycled pid is never mistaken for one). A ``serve`` killed with
``-9`` cannot stop its children; they get SIGTERM from the kernel when their parent dies
(``PR_SET_PDEATHSIG``, set in ``supervisor``), and whatever still runs of them (their own
children, a child that ignored the signal) is stopped by the next ``serve`` before it starts,
from this record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_NAME = "serve.lock"
STOP_GRACE_SECONDS = 10.0


class AlreadyServing(RuntimeError):
    """Another ``librarian serve`` holds this data dir."""


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    started: int


class ServeLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> list[Recorded]:
        """Take the lock (or raise ``AlreadyServing``); returns what the last serve recorded."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _parse(handle.read()).get("serve_pid", "?")
            handle.close()
            raise AlreadyServing(
                f"another librarian serve (pid {holder}) is running for this data dir "
                f"({self.path.parent}); stop it first"
            ) from None
        self._handle = handle
        handle.seek(0)
        record = _parse(handle.read())
        return [
            Recorded(str(c["name"]), int(c["pid"]), int(c["started"]))
            for c in record.get("children", [])
            if isinstance(c, dict) and {"name", "pid", "started"} <= set(c)
        ]

    def record(self, children: dict[str, int]) -> None:
        """Write this serve's children (name → pid, each a process group leader)."""
        assert self._handle is not None, "acquire first"
        entries = [
            {"name": name, "pid": pid, "started": started}
            for name, pid in children.items()
            if (started := start_time(pid)) is not None
        ]
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps({"serve_pid": os.getpid(), "children": entries}))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.truncate(0)
            self._handle.close()
            self._handle = None


def _parse(text: str) -> dict[str, object]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def group_members(groups: set[int]) -> list[int]:
    """PIDs whose process group is one of ``groups`` (zombies left out: they are gone)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in groups:
            members.append(int(entry.name))
    return members


def _group_has_members(pgid: int) -> bool:
    return bool(group_members({pgid}))


def _still_ours(orphan: Recorded) -> bool:
    """Whether the recorded group still runs and is the one recorded.

    Its leader alive with the recorded start time; or the leader gone but members left (a
    process group id is not given to a new process while the group has members). A leader
    pid now held by another process means the group is gone and the pid reused: not ours.
    """
    started = start_time(orphan.pid)
    if started is not None:
        return started == orphan.started
    return _group_has_members(orphan.pid)


def stop_orphans(orphans: list[Recorded]) -> list[str]:
    """Stop the process groups of a previous serve's children that still run; their names."""
    found = [orphan for orphan in orphans if _still_ours(orphan)]
    for orphan in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(orphan.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(_group_has_members(o.pid) for o in found):
        time.sleep(0.2)
    for orphan in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(orphan.pid, signal.SIGKILL)
    return [orphan.name for orphan in found]
