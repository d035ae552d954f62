"""``librarian serve`` is quiet when idle: warnings and errors only; ``--verbose`` shows INFO.

Also: the Dagster UI's "join the community" dialog (NUX) is off for a librarian.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from librarian_dagster.cli.supervisor import child_commands
from tests.live import ADMIN_PASSWORD, LiveLibrarian

pytestmark = pytest.mark.live

ANSI = re.compile(r"\x1b\[[0-9;]*m")
INFO = re.compile(r"\bINFO\b")
HEARTBEAT = "No heartbeat received"
BANNER = 'librarian "live-site" serving'


@dataclass
class ServedLibrarian(LiveLibrarian):
    """A live librarian whose ``serve`` output is read without colour codes."""

    def output(self) -> str:
        path = self.directory / "serve.log"
        return ANSI.sub("", path.read_text(errors="replace"))


IDLE_SECONDS = 35  # seven sensor ticks


def test_idle_serve_prints_nothing_but_warnings_and_errors(tmp_path: Path) -> None:
    # Room for an upload that no store can hold: the API answers 507 and logs a warning.
    site = ServedLibrarian(tmp_path, extra_config=["[ingest]", f"max_upload_bytes = {2**52}"])
    try:
        site.start()
        # The UI asks this before it shows its first-visit dialog.
        assert site.graphql("{ shouldShowNux }") == {"shouldShowNux": False}
        time.sleep(IDLE_SECONDS)
        assert site.process is not None and site.process.poll() is None, site.log()
        idle = site.output()
        assert idle.count("live-site") == 1 and BANNER in idle, idle
        assert not INFO.search(idle), idle
        # (The heartbeat warning comes only ~100 s in, when the daemon first replaces its
        # code server: test_quiet_code_servers_do_not_warn_of_missed_heartbeats checks it.)

        # Warnings and errors still get through: the API's warning for a 507 ...
        upload = httpx.post(
            f"{site.api_url}/api/v2/uploads",
            json={"name": "too/big", "size": 2**50},
            auth=("admin", ADMIN_PASSWORD),
            timeout=30,
        )
        assert upload.status_code == 507, upload.text
        site.wait_until(lambda: "POST /api/v2/uploads: 507" in site.output(), 30, "API warning")
        # ... and a failing sensor tick, logged by the daemon.
        with sqlite3.connect(tmp_path / "catalogue.sqlite") as db:
            db.execute("ALTER TABLE incoming_transfers RENAME TO hidden_transfers")
        site.wait_until(
            lambda: "ERROR - Sensor tick caught an error" in site.output(), 60, "sensor error"
        )
    finally:
        code = site.stop()
    assert code == 0, site.log()
    assert not INFO.search(site.output()), site.log()


def test_verbose_serve_prints_info(tmp_path: Path) -> None:
    site = ServedLibrarian(tmp_path, serve_args=["--verbose"])
    try:
        site.start()
        site.wait_until(
            lambda: "INFO - Sensor ingest_sensor skipped" in site.output(), 60, "sensor INFO"
        )
    finally:
        code = site.stop()
    assert code == 0, site.log()
    output = site.output()
    assert "Uvicorn running on" in output  # the API's
    assert "dagster-webserver - INFO - Serving dagster-webserver" in output
    assert "dagster.code_server - INFO" in output


def _code_server_level(verbose: bool, child: str) -> str:
    children = child_commands(
        api_host="127.0.0.1",
        api_port=1,
        webserver_host="127.0.0.1",
        webserver_port=2,
        workspace=Path("workspace.yaml"),
        env={},
        verbose=verbose,
    )
    (argv,) = [c.argv for c in children if c.name == child]
    return argv[list(argv).index("--code-server-log-level") + 1]


@pytest.mark.parametrize("child", ["dagster-daemon", "dagster-webserver"])
def test_quiet_code_servers_do_not_warn_of_missed_heartbeats(tmp_path: Path, child: str) -> None:
    """Every minute the daemon replaces its code server and the old one, left without
    heartbeats, warns as it goes (the webserver's, after a reload): serve's first cycle is
    ~100 s, so this starts a code server as serve's children would, with a 1 s timeout."""
    outputs = {}
    for verbose in (False, True):
        level = _code_server_level(verbose, child)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "dagster", "api", "grpc", "--lazy-load-user-code"),
                *("--socket", str(tmp_path / f"grpc-{verbose}.sock")),
                *("--heartbeat", "--heartbeat-timeout", "1", "--log-level", level),
                *("--module-name", "librarian_dagster.definitions"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        outputs[verbose] = result.stdout + result.stderr
    assert HEARTBEAT not in outputs[False], outputs[False]
    assert HEARTBEAT in outputs[True], outputs[True]
