"""``librarian serve`` for real: API, Dagster webserver and daemon on loopback ports."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from librarian_dagster.cli.serve_lock import group_members
from tests.live import ADMIN_PASSWORD, LiveLibrarian

pytestmark = pytest.mark.live

LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
DAEMONS = """{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_serve_runs_all_three_and_stops_cleanly(tmp_path: Path) -> None:
    site = LiveLibrarian(tmp_path)
    try:
        site.start()
        ping = httpx.get(f"{site.api_url}/api/v2/ping").json()
        assert ping["name"] == "live-site" and ping["healthy"] is True
        users = httpx.get(f"{site.api_url}/api/v2/users", auth=("admin", ADMIN_PASSWORD))
        assert users.status_code == 200
        (location,) = site.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        assert location["name"] == "librarian" and location["loadStatus"] == "LOADED"
        assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location

        def sensor_daemon_healthy() -> bool:
            statuses = site.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            return any(s["daemonType"] == "SENSOR" and s["healthy"] for s in statuses)

        site.wait_until(sensor_daemon_healthy, 90, "the daemon's sensor heartbeat")
        children = site.child_pids()
        assert set(children) == {"api", "dagster-webserver", "dagster-daemon"}
    finally:
        code = site.stop()
    assert code == 0, site.log()
    assert not any(_alive(pid) for pid in children.values())
    assert group_members(set(children.values())) == []
    assert site.get(f"{site.api_url}/api/v2/ping") is None


def test_serve_stops_everything_when_one_child_dies(tmp_path: Path) -> None:
    site = LiveLibrarian(tmp_path)
    try:
        site.start()
        children = site.child_pids()
        os.kill(children["dagster-daemon"], signal.SIGKILL)
        assert site.process is not None
        code = site.process.wait(timeout=60)
    finally:
        site.stop()
    assert code == 5, site.log()
    assert "dagster-daemon exited" in site.log()
    assert not any(_alive(pid) for pid in children.values())
    # Each child leads its own process group; nothing in them (code servers) may linger.
    assert group_members(set(children.values())) == []


def test_kill_9_of_serve_takes_its_children_and_a_new_serve_starts(tmp_path: Path) -> None:
    """kill -9 cannot be caught: the children must die with their parent, and the next serve
    must find the port free (and stop anything left of the old groups) before it starts."""
    site = LiveLibrarian(tmp_path)
    try:
        site.start()
        children = site.child_pids()
        assert site.process is not None
        site.process.kill()
        site.process.wait(timeout=30)
        site.process = None
        site.wait_until(
            lambda: not any(_alive(pid) for pid in children.values()), 60, "children to die"
        )
        site.start()  # same ports, same data dir
        ping = httpx.get(f"{site.api_url}/api/v2/ping").json()
        assert ping["healthy"] is True
    finally:
        site.stop()
    assert group_members(set(children.values())) == []


def test_children_get_no_admin_password_and_a_second_serve_is_refused(tmp_path: Path) -> None:
    site = LiveLibrarian(tmp_path)
    try:
        site.start()
        for role, pid in site.child_pids().items():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
            assert "LIBRARIAN_ADMIN_PASSWORD" not in names, role
            assert {"LIBRARIAN_CONFIG", "DAGSTER_HOME", "PATH"} <= names, role
        second = site.librarian("serve")
        assert second.returncode == 1
        (line,) = second.stderr.strip().splitlines()
        assert "another librarian serve" in line and "is running for this data dir" in line
        assert f"pid {site.process.pid}" in line  # type: ignore[union-attr]
        assert f"API {site.api_url}" in line and f"Dagster UI {site.webserver_url}" in line
        state = tmp_path / "state"
        assert state.stat().st_mode & 0o777 == 0o700
        for suffix in ("", "-wal", "-shm"):
            catalogue = tmp_path / f"catalogue.sqlite{suffix}"
            if suffix == "" or catalogue.exists():
                assert catalogue.stat().st_mode & 0o777 == 0o600, catalogue
    finally:
        site.stop()
