"""Start real librarians (``librarian serve``) on loopback ports for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import httpx

from librarian_dagster.dagster_instance import DAGSTER_PG_URL_ENV
from tests.conftest import FAST_ARGON2, free_port

BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "live-admin-password"


@dataclass
class LiveLibrarian:
    directory: Path
    name: str = "live-site"
    database_url: str = ""
    dagster_postgres_url: str = ""
    api_port: int = field(default_factory=free_port)
    webserver_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_config: list[str] = field(default_factory=list)  # TOML lines appended at the end
    serve_args: list[str] = field(default_factory=list)  # e.g. ["--verbose"]

    @property
    def config(self) -> Path:
        return self.directory / "librarian.toml"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.webserver_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRARIAN_", "DAGSTER_"))}
        env["LIBRARIAN_STATE_DIR"] = os.environ["LIBRARIAN_STATE_DIR"]  # set by conftest
        env["LIBRARIAN_CONFIG"] = str(self.config)
        env["LIBRARIAN_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        return env

    def write_config(self) -> None:
        database_url = self.database_url or f"sqlite:///{self.directory / 'catalogue.sqlite'}"
        lines = [
            f'name = "{self.name}"',
            'data_dir = "state"',
            f'database_url = "{database_url}"',
            "[api]",
            f"port = {self.api_port}",
            "[dagster]",
            f"webserver_port = {self.webserver_port}",
            f'postgres_url = "{self.dagster_postgres_url}"',
            "[security]",
            *(f"{k} = {v}" for k, v in FAST_ARGON2.items()),
            "[[stores]]",
            'name = "main"',
            'root = "stores/main"',
            "reserve_bytes = 0",
            *self.extra_config,
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def librarian(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "librarian"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            cwd=self.directory,
            timeout=300,
        )

    def start(self, timeout: float = 120.0) -> None:
        self.write_config()
        init = self.librarian("init")
        assert init.returncode == 0, init.stderr + init.stdout
        log = (self.directory / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "librarian"), "serve", *self.serve_args],
            env=self.env(),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_until(lambda: self.get(f"{self.api_url}/api/v2/ping") == 200, timeout, "API")
        self.wait_until(
            lambda: self.get(f"{self.webserver_url}/server_info") == 200, timeout, "webserver"
        )

    @contextlib.contextmanager
    def dagster_instance(self) -> Iterator[dg.DagsterInstance]:
        """This librarian's Dagster instance, read in this process (its ``dagster.yaml``
        names the PostgreSQL URL by variable, which is set meanwhile when there is one)."""
        saved = os.environ.get(DAGSTER_PG_URL_ENV)
        if self.dagster_postgres_url:
            os.environ[DAGSTER_PG_URL_ENV] = self.dagster_postgres_url
        try:
            with dg.DagsterInstance.from_config(str(self.directory / "state" / "dagster")) as found:
                yield found
        finally:
            if saved is None:
                os.environ.pop(DAGSTER_PG_URL_ENV, None)
            else:
                os.environ[DAGSTER_PG_URL_ENV] = saved

    def get(self, url: str) -> int | None:
        try:
            return httpx.get(url, timeout=5).status_code
        except httpx.HTTPError:
            return None

    def graphql(self, query: str) -> dict:
        response = httpx.post(f"{self.webserver_url}/graphql", json={"query": query}, timeout=30)
        response.raise_for_status()
        return response.json()["data"]

    def wait_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"librarian serve exited early:\n{self.log()}")
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()}")

    def log(self) -> str:
        path = self.directory / "serve.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def child_pids(self) -> dict[str, int]:
        """PIDs of the serve's children by role, read from /proc."""
        assert self.process is not None
        roles = {
            "uvicorn": "api",
            "dagster-webserver": "dagster-webserver",
            "dagster-daemon": "dagster-daemon",
        }
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent != self.process.pid:
                continue
            for marker, role in roles.items():
                if marker in cmdline:
                    found[role] = int(entry.name)
        return found
