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

While it runs, a serve also leaves a pointer to its data dir and config in the user's state
directory (``$XDG_STATE_HOME/librarian/serving``, or ``LIBRARIAN_STATE_DIR``), so that admin
commands run from anywhere can find the librarian that is running (``running_librarians``).
A pointer counts only while its data dir's lock is held: one left by a serve that was killed
is ignored and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK_NAME = "serve.lock"
STATE_DIR_ENV = "LIBRARIAN_STATE_DIR"
LOCK_PATIENCE_SECONDS = 1.0
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


def registry_dir() -> Path:
    """Where running serves leave pointers to their data dirs (one file per data dir)."""
    given = os.environ.get(STATE_DIR_ENV)
    if given:
        return Path(given)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "librarian" / "serving"


def _pointer(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]
    return registry_dir() / f"{digest}.json"


def holder(data_dir: Path) -> dict[str, object] | None:
    """The record of the serve that holds ``data_dir``'s lock, or None if none does."""
    path = data_dir / LOCK_NAME
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a serve is running there
            handle.seek(0)
            return _parse(handle.read()) or {"serve_pid": "?"}
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def describe(record: dict[str, object]) -> str:
    """``pid 123, API http://…, Dagster UI http://…`` from a lock record."""
    parts = [f"pid {record.get('serve_pid', '?')}"]
    if record.get("api_url"):
        parts.append(f"API {record['api_url']}")
    if record.get("ui_url"):
        parts.append(f"Dagster UI {record['ui_url']}")
    return ", ".join(parts)


@dataclass(frozen=True)
class RunningLibrarian:
    data_dir: Path
    config_file: Path | None  # None: embedded defaults, anchored at ``working_dir``
    working_dir: Path
    record: dict[str, object]


def running_librarians() -> list[RunningLibrarian]:
    """The librarians whose serve runs now (for this user), from the pointers they left."""
    found = []
    try:
        pointers = sorted(registry_dir().glob("*.json"))
    except OSError:
        return []
    for pointer in pointers:
        entry = _parse(pointer.read_text(errors="replace")) if pointer.is_file() else {}
        data_dir = entry.get("data_dir")
        record = holder(Path(data_dir)) if isinstance(data_dir, str) else None
        if record is None or not isinstance(data_dir, str):
            with contextlib.suppress(OSError):
                pointer.unlink()  # left by a serve that did not end cleanly
            continue
        config = entry.get("config_file")
        found.append(
            RunningLibrarian(
                Path(data_dir),
                Path(config) if isinstance(config, str) and config else None,
                Path(str(entry.get("working_dir") or data_dir)),
                record,
            )
        )
    return found


def _lock_exclusive(handle: IO[str]) -> None:
    """Take the lock, or raise ``BlockingIOError`` if a serve holds it.

    ``holder`` (an admin command looking for the running librarian) takes it shared for an
    instant; a serve starting in that instant waits a little rather than being refused.
    """
    deadline = time.monotonic() + LOCK_PATIENCE_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class ServeLock:
    def __init__(self, data_dir: Path, announce: dict[str, str] | None = None) -> None:
        """``announce``: what the lock file and pointer tell others (URLs, config file)."""
        self.path = data_dir / LOCK_NAME
        self.token = secrets.token_hex(16)
        self.announce = dict(announce or {})
        self._handle: IO[str] | None = None

    def acquire(self) -> str | None:
        """Take the lock (or raise ``AlreadyServing``); the token of the serve before, if it
        ran in this boot and did not end cleanly."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            _lock_exclusive(handle)
        except BlockingIOError:
            handle.seek(0)
            running = _parse(handle.read())
            handle.close()
            raise AlreadyServing(
                f"another librarian serve ({describe(running)}) is running for this data dir "
                f"({self.path.parent}); stop it first"
            ) from None
        self._handle = handle
        handle.seek(0)
        record = _parse(handle.read())
        self._write(children=[])
        self._leave_pointer()
        previous = record.get("token")
        if isinstance(previous, str) and previous and record.get("boot_id") == boot_id():
            return previous
        return None

    def record(self, children: list[str]) -> None:
        """Write this serve's token and children (by name) to the lock file."""
        self._write(children)

    def _write(self, children: list[str]) -> None:
        assert self._handle is not None, "acquire first"
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(
            json.dumps(
                {
                    **self.announce,
                    "serve_pid": os.getpid(),
                    "boot_id": boot_id(),
                    "token": self.token,
                    "children": children,
                }
            )
        )
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _leave_pointer(self) -> None:
        """Tell admin commands run elsewhere where this librarian is (best effort)."""
        pointer = _pointer(self.path.parent)
        entry = {
            "data_dir": str(self.path.parent.resolve()),
            "config_file": self.announce.get("config_file", ""),
            "working_dir": os.getcwd(),
        }
        try:
            pointer.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = pointer.with_name(f".{pointer.name}.{os.getpid()}")
            temporary.write_text(json.dumps(entry))
            temporary.replace(pointer)
        except OSError:
            pass  # discovery is a convenience; --config always works

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                _pointer(self.path.parent).unlink()
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
