"""``LocalMover``: moves a batch of books on this host, in the background, like a Globus task.

It is the byte mover of peers on the same host (a test's two librarians, a site that keeps
two catalogues on one machine) and the double of ``GlobusMover`` in every pipeline test:
the same protocol, the same life of a task (active → succeeded | failed | cancelled), per-
item results and faults, so the code around it is the code Globus runs under.

A task is a directory under ``state_dir`` named by its submission id::

    <submission id>/task.json      the items and label, written once (atomically)
    <submission id>/results.jsonl  one line per finished item: done, fault, checksum, bytes
    <submission id>/final.json     the task's end (succeeded, failed, cancelled)
    <submission id>/cancel         asks the worker to stop before the next item
    <submission id>/lock           held (flock) by the worker while it works

``submit`` writes the task and starts a worker process (``local_worker``) in a session of
its own, so the move goes on after the submitting run has ended, as a Globus task would.
Whoever asks ``status`` later needs only the task id: everything is on disk. A worker that
died (a reboot, a kill) is started again by the next ``status``: it skips the items already
recorded and copies the others again from the start (a partial copy is replaced). The
worker hashes while it copies and refuses to deliver a book whose bytes do not match the
catalogue's checksum: the sender's copy is bad, and sending it would only fail at the peer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from librarian_dagster.storage.movers.addressing import local_address
from librarian_dagster.storage.movers.protocol import (
    ItemResult,
    MoveItem,
    MoverError,
    TaskReport,
    TaskStatus,
)

TASK_FILE = "task.json"
RESULTS_FILE = "results.jsonl"
FINAL_FILE = "final.json"
CANCEL_FILE = "cancel"
LOCK_FILE = "lock"
LOG_FILE = "worker.log"
WORKER_MODULE = "librarian_dagster.storage.movers.local_worker"

_SUBMISSION_ID = re.compile(r"[0-9a-f]{32}")


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as JSON beside ``path`` and rename it into place (never half a file)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(temporary, "w") as out:
        json.dump(value, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def read_results(task_dir: Path) -> dict[int, dict[str, Any]]:
    """The finished items by index; a torn last line (a killed worker) is ignored."""
    results: dict[int, dict[str, Any]] = {}
    try:
        lines = (task_dir / RESULTS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return results
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[int(record["index"])] = record
    return results


def worker_alive(task_dir: Path) -> bool:
    """Whether a worker holds the task's lock (it is released when the worker dies)."""
    try:
        descriptor = os.open(task_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing releases a lock we got
    return False


class LocalMover:
    """Copies batches of books on this host in background worker processes."""

    name = "local"

    def __init__(self, state_dir: Path | str, *, python: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self._python = python or sys.executable

    def __repr__(self) -> str:
        return f"LocalMover({str(self.state_dir)!r})"

    def address(self, path: Path | str) -> str:
        return local_address(path)

    def new_submission_id(self) -> str:
        return uuid.uuid4().hex

    def _task_dir(self, task_id: str) -> Path:
        if not isinstance(task_id, str) or not _SUBMISSION_ID.fullmatch(task_id):
            raise MoverError(f"no local task {str(task_id)[:80]!r}")
        return self.state_dir / task_id

    def submit(
        self,
        items: Sequence[MoveItem],
        *,
        label: str,
        submission_id: str,
        endpoint: str | None = None,
    ) -> str:
        if not items:
            raise MoverError(f"{label}: nothing to move")
        task_dir = self._task_dir(submission_id)
        if not (task_dir / TASK_FILE).exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            building = self.state_dir / f".{submission_id}.{uuid.uuid4().hex}"
            building.mkdir(mode=0o700)
            write_json_atomically(
                building / TASK_FILE,
                {
                    "task_id": submission_id,
                    "label": label,
                    "created": datetime.now(UTC).isoformat(),
                    "items": [asdict(item) for item in items],
                },
            )
            try:
                os.rename(building, task_dir)  # the task exists whole or not at all
            except OSError:  # submitted meanwhile with the same id: that one stands
                with contextlib.suppress(OSError):
                    (building / TASK_FILE).unlink()
                    building.rmdir()
                if not (task_dir / TASK_FILE).exists():
                    raise
        self._ensure_worker(task_dir)
        return submission_id

    def status(self, task_id: str) -> TaskReport:
        task_dir = self._task_dir(task_id)
        task = self._load(task_dir, task_id)
        items = [MoveItem(**item) for item in task["items"]]
        results = read_results(task_dir)
        reported = tuple(
            ItemResult(
                item,
                done=bool(results[index]["done"]),
                fault=results[index].get("fault"),
                checksum=results[index].get("checksum"),
            )
            for index, item in enumerate(items)
            if index in results
        )
        moved = sum(int(record.get("bytes", 0)) for record in results.values() if record["done"])
        final = self._final(task_dir)
        if final is None:
            self._ensure_worker(task_dir)
            return TaskReport(task_id, TaskStatus.ACTIVE, reported, bytes_moved=moved)
        return TaskReport(
            task_id,
            TaskStatus(final["status"]),
            reported,
            fault=final.get("fault"),
            bytes_moved=moved,
        )

    def cancel(self, task_id: str) -> None:
        task_dir = self._task_dir(task_id)
        self._load(task_dir, task_id)
        if self._final(task_dir) is not None:
            return
        (task_dir / CANCEL_FILE).touch()
        if not worker_alive(task_dir):
            self._ensure_worker(task_dir)  # it sees the cancel at once and ends the task

    def task_ids(self) -> list[str]:
        """Every task this mover knows (for tests and operators counting what was sent)."""
        if not self.state_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.state_dir.iterdir()
            if _SUBMISSION_ID.fullmatch(entry.name) and (entry / TASK_FILE).exists()
        )

    def items_of(self, task_id: str) -> list[MoveItem]:
        task = self._load(self._task_dir(task_id), task_id)
        return [MoveItem(**item) for item in task["items"]]

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _load(task_dir: Path, task_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads((task_dir / TASK_FILE).read_text()))
        except FileNotFoundError:
            raise MoverError(f"no local task {task_id!r}") from None

    @staticmethod
    def _final(task_dir: Path) -> dict[str, Any] | None:
        try:
            return dict(json.loads((task_dir / FINAL_FILE).read_text()))
        except FileNotFoundError:
            return None

    def _ensure_worker(self, task_dir: Path) -> None:
        """Start a worker unless one is at work or the task is over (a second one would
        find the lock taken and leave at once)."""
        if self._final(task_dir) is not None or worker_alive(task_dir):
            return
        with open(task_dir / LOG_FILE, "ab") as log:
            subprocess.Popen(
                [self._python, "-m", WORKER_MODULE, str(task_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped with the run or serve that started it
                close_fds=True,
            )
