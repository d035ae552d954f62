"""The serve lock: one serve per data dir, and a previous serve's orphans stopped safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from librarian_dagster.cli.serve_lock import (
    AlreadyServing,
    Recorded,
    ServeLock,
    start_time,
    stop_orphans,
)
from librarian_dagster.cli.supervisor import child_environment


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )


def test_a_second_lock_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    first = ServeLock(tmp_path)
    assert first.acquire() == []
    first.record({"api": os.getpid()})
    with pytest.raises(AlreadyServing, match=f"pid {os.getpid()}"):
        ServeLock(tmp_path).acquire()
    first.release()
    assert ServeLock(tmp_path).acquire() == []  # released: free again, record cleared


def test_orphans_recorded_by_a_dead_serve_are_stopped(tmp_path: Path) -> None:
    orphan = _sleeper()
    try:
        lock = ServeLock(tmp_path)
        lock.acquire()
        lock.record({"api": orphan.pid})
        lock._handle.close()  # a serve killed with -9: its lock goes, its record stays
        lock._handle = None
        recorded = ServeLock(tmp_path).acquire()
        assert [r.name for r in recorded] == ["api"]
        assert stop_orphans(recorded) == ["api"]
        assert orphan.wait(timeout=30) == -signal.SIGTERM
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_a_reused_pid_is_never_stopped(tmp_path: Path) -> None:
    bystander = _sleeper()
    try:
        started = start_time(bystander.pid)
        assert started is not None
        # Recorded with another start time: the pid now belongs to someone else.
        assert stop_orphans([Recorded("api", bystander.pid, started - 1)]) == []
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_children_inherit_only_what_they_need() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "LIBRARIAN_CONFIG": "/etc/librarian.toml",
        "LIBRARIAN_API__PORT": "8081",
        "LIBRARIAN_ADMIN_PASSWORD": "first-admin-secret",
        "LIBRARIAN_NEW_PASSWORD": "another-secret",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "AWS_SECRET_ACCESS_KEY": "unrelated",
        "DAGSTER_HOME": "/var/lib/librarian/dagster",
        "PGPASSFILE": "/root/.pgpass",
    }
    assert child_environment(environ, ["SLACK_BOT_TOKEN"]) == {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "LIBRARIAN_CONFIG": "/etc/librarian.toml",
        "LIBRARIAN_API__PORT": "8081",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "DAGSTER_HOME": "/var/lib/librarian/dagster",
        "PGPASSFILE": "/root/.pgpass",
    }
