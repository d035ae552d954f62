"""One ``librarian serve`` per data dir, and no orphans of a previous one.

``<data_dir>/serve.lock`` is held with ``flock`` for as long as ``serve`` runs: a second
``serve`` on the same data dir is refused in one line (two would share stores, staging and
Dagster's storage). The file records this serve's token, the kernel's boot id and the
children's names. Every child (and whatever it starts) carries the token in its environment
(``LIBRARIAN_SERVE_TOKEN``). A ``serve`` killed with ``-9`` cannot stop its children; they
get SIGTERM from the kernel when their parent dies (``PR_SET_PDEATHSIG``, set in
``supervisor``), and whatever still runs of them (a code server a child started, a child that
ignored the signal) is stopped by the next ``serve`` before it starts: the processes, in this
boot, whose environment holds the recorded token. Nothing else is ever signalled: not a
process that got a recycled pid, not anything after a reboot.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import IO

LOCK_NAME = "serve.lock"
TOKEN_ENV = "LIBRARIAN_SERVE_TOKEN"
STOP_GRACE_SECONDS = 10.0


class AlreadyServing(RuntimeError):
    """Another ``librarian serve`` holds this data dir."""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def group_members(groups: set[int]) -> list[int]:
    """PIDs whose process group is one of ``groups`` (zombies left out: they are gone)."""
    return [
        pid
        for pid in _pids()
        if (fields := _stat_fields(pid)) is not None
        and fields[0] != "Z"
        and int(fields[2]) in groups
    ]


def carrying(token: str) -> list[int]:
    """PIDs (not zombies) whose environment holds ``LIBRARIAN_SERVE_TOKEN=token``."""
    marker = f"{TOKEN_ENV}={token}".encode()
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        fields = _stat_fields(pid)
        if fields is not None and fields[0] != "Z" and marker in environ.split(b"\0"):
            found.append(pid)
    return found


class ServeLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self.token = secrets.token_hex(16)
        self._handle: IO[str] | None = None

    def acquire(self) -> str | None:
        """Take the lock (or raise ``AlreadyServing``); the token of the serve before, if it
        ran in this boot and did not end cleanly."""
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
        previous = record.get("token")
        if isinstance(previous, str) and previous and record.get("boot_id") == boot_id():
            return previous
        return None

    def record(self, children: list[str]) -> None:
        """Write this serve's token and children (by name) to the lock file."""
        assert self._handle is not None, "acquire first"
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(
            json.dumps(
                {
                    "serve_pid": os.getpid(),
                    "boot_id": boot_id(),
                    "token": self.token,
                    "children": children,
                }
            )
        )
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


def stop_orphans(token: str | None) -> int:
    """Stop what still runs of the serve that had ``token``; returns how many processes."""
    if not token:
        return 0
    found = carrying(token)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and carrying(token):
        time.sleep(0.2)
    for pid in carrying(token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(found)
