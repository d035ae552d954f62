"""``librarian serve``: run the API, the Dagster webserver and the Dagster daemon together.

The three are child processes in their own process group each. Ctrl-C or SIGTERM stops all
three (SIGTERM, then SIGKILL after a grace period). If one dies on its own, the others are
stopped too and the exit code says which one died first, so a service manager restarts the
whole librarian rather than running it half-alive. If ``serve`` itself is killed (``-9``),
the kernel sends each child SIGTERM (``PR_SET_PDEATHSIG``); ``serve_lock`` stops whatever is
left at the next start.

Children get only the environment they need (:func:`child_environment`): not, for one,
``LIBRARIAN_ADMIN_PASSWORD``, which only ``init`` reads.

Idle, the children print only warnings and errors (``--verbose``: their INFO lines too).
The code servers the webserver and the daemon start log errors only: every minute the
daemon starts a fresh one (to pick up code changes) and leaves the previous one to time out,
which then warns "No heartbeat received in 20 seconds, shutting down" (the webserver's do the
same after a reload, in 45 s). That is Dagster's design, not a fault; a code server's
other warnings are about its own shutdown.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from librarian_dagster.storage.posix import libc_function

GRACE_SECONDS = 20.0

# Exit codes of `librarian serve` when a child dies on its own (documented in the README).
EXIT_CODES = {"api": 3, "dagster-webserver": 4, "dagster-daemon": 5}


PR_SET_PDEATHSIG = 1
_prctl = libc_function(
    "prctl",
    (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong),
)

# What a child may inherit: the system's basics, Python's and Dagster's own variables, proxies
# and CA bundles, PostgreSQL's client settings, the librarian's overrides; plus the variables
# the config names for secrets (Slack, Globus), given by the caller.
_INHERITED_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "TERM", "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE", "LD_LIBRARY_PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
        "https_proxy", "no_proxy", "SYSTEMD_EXEC_PID", "INVOCATION_ID",
    }
)  # fmt: skip
_INHERITED_PREFIXES = ("LC_", "PYTHON", "DAGSTER_", "PG", "LIBRARIAN_")
# Read by ``librarian init`` and the client commands only: children never need them.
_WITHHELD = frozenset({"LIBRARIAN_ADMIN_PASSWORD", "LIBRARIAN_NEW_PASSWORD", "LIBRARIAN_PASSWORD"})


def child_environment(environ: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """The environment of a child: the allow-list above plus the named secret variables."""
    wanted = set(secret_names)
    return {
        name: value
        for name, value in environ.items()
        if name not in _WITHHELD
        and (name in _INHERITED_NAMES or name in wanted or name.startswith(_INHERITED_PREFIXES))
    }


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when ``serve`` dies, however it dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.process = subprocess.Popen(
            list(self.argv),
            env=self.env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def child_commands(
    *,
    api_host: str,
    api_port: int,
    webserver_host: str,
    webserver_port: int,
    workspace: Path,
    env: dict[str, str],
    verbose: bool = False,
) -> list[Child]:
    bindir = Path(sys.executable).parent
    level = "info" if verbose else "warning"
    code_servers = "info" if verbose else "error"  # see the module docstring
    return [
        Child(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "librarian_dagster.api.app:create_app",
                "--host",
                api_host,
                "--port",
                str(api_port),
                "--no-access-log",
                "--log-level",
                level,
                # The client address is the socket's: X-Forwarded-For from anyone on this
                # host would otherwise choose the address the login throttle counts.
                "--no-proxy-headers",
                "--timeout-graceful-shutdown",
                "10",
            ],
            env,
        ),
        Child(
            "dagster-webserver",
            [
                str(bindir / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                webserver_host,
                "-p",
                str(webserver_port),
                "--dagster-log-level",
                level,
                "--code-server-log-level",
                code_servers,
            ],
            env,
        ),
        Child(
            "dagster-daemon",
            [
                str(bindir / "dagster-daemon"),
                "run",
                "-w",
                str(workspace),
                "--log-level",
                level,
                "--code-server-log-level",
                code_servers,
            ],
            env,
        ),
    ]


def stop_all(children: Sequence[Child], grace: float = GRACE_SECONDS) -> None:
    # Signal every group, also one whose leader already died: its own children (a Dagster
    # code server, say) are still in the group and must not outlive the librarian.
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.signal_group(signal.SIGKILL)
            child.process.wait()
    for child in children:  # stragglers in the groups get no more grace
        child.signal_group(signal.SIGKILL)


def supervise(
    children: Sequence[Child],
    say: Callable[[str], None],
    on_started: Callable[[Sequence[Child]], None] | None = None,
) -> int:
    """Start the children and wait; returns the exit code for ``librarian serve``."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.start()
        if on_started is not None:
            on_started(children)
        while not stopping:
            dead = [child for child in children if not child.alive()]
            if dead:
                first = dead[0]
                code = first.process.returncode if first.process else None
                say(f"{first.name} exited (code {code}); stopping the others")
                stop_all(children)
                return EXIT_CODES.get(first.name, 1)
            time.sleep(0.5)
        say("stopping")
        stop_all(children)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
