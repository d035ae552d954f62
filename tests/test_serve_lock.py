"""The serve lock: one serve per data dir, and a previous serve's orphans stopped safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from librarian_dagster.cli.serve_lock import (
    TOKEN_ENV,
    AlreadyServing,
    ServeLock,
    boot_id,
    stop_orphans,
)
from librarian_dagster.cli.supervisor import child_environment


def _sleeper(token: str | None = None, *, detached_child: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    if token is not None:
        env[TOKEN_ENV] = token
    code = "import time; time.sleep(600)"
    if detached_child:  # like a code server: a grandchild in a session of its own
        code = (
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(600)'], start_new_session=True); time.sleep(600)"
        )
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)


def test_a_second_lock_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    first = ServeLock(tmp_path)
    assert first.acquire() is None
    first.record(["api"])
    with pytest.raises(AlreadyServing, match=f"pid {os.getpid()}"):
        ServeLock(tmp_path).acquire()
    first.release()
    assert ServeLock(tmp_path).acquire() is None  # released cleanly: nothing to stop


def test_what_a_killed_serve_left_is_stopped_and_nothing_else(tmp_path: Path) -> None:
    dead = ServeLock(tmp_path)
    dead.acquire()
    dead.record(["api"])
    dead._handle.close()  # a serve killed with -9: its lock goes, its record stays
    dead._handle = None
    orphan = _sleeper(dead.token, detached_child=True)
    bystander = _sleeper()  # same user, no token: never touched
    try:
        time.sleep(0.5)  # the orphan's own child started
        previous = ServeLock(tmp_path).acquire()
        assert previous == dead.token
        assert stop_orphans(previous) == 2  # the orphan and its detached child
        assert orphan.wait(timeout=30) == -signal.SIGTERM
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        for process in (orphan, bystander):
            if process.poll() is None:
                process.kill()


def test_a_record_from_another_boot_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "serve.lock").write_text(
        json.dumps({"serve_pid": 1, "boot_id": "not-" + boot_id(), "token": "t", "children": []})
    )
    assert ServeLock(tmp_path).acquire() is None


def test_children_inherit_only_what_they_need() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "LD_LIBRARY_PATH": "/opt/pg/lib",
        "LIBRARIAN_CONFIG": "/etc/librarian.toml",
        "LIBRARIAN_API__PORT": "8081",
        "LIBRARIAN_ADMIN_PASSWORD": "first-admin-secret",
        "LIBRARIAN_NEW_PASSWORD": "another-secret",
        "LIBRARIAN_PASSWORD": "a-client-password",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "AWS_SECRET_ACCESS_KEY": "unrelated",
        "DAGSTER_HOME": "/var/lib/librarian/dagster",
        "PGPASSFILE": "/root/.pgpass",
    }
    assert child_environment(environ, ["SLACK_BOT_TOKEN"]) == {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "LD_LIBRARY_PATH": "/opt/pg/lib",
        "LIBRARIAN_CONFIG": "/etc/librarian.toml",
        "LIBRARIAN_API__PORT": "8081",
        "SLACK_BOT_TOKEN": "xoxb-1",
        "DAGSTER_HOME": "/var/lib/librarian/dagster",
        "PGPASSFILE": "/root/.pgpass",
    }
