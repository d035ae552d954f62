#!/usr/bin/env python3
"""The README's two commands: ``python3 dev.py serve`` and ``python3 dev.py test``.

Needs only ``python3`` (3.11+) and PyPI. Creates ``.venv`` beside this file, installs the
project with its test extras (again only when ``pyproject.toml`` changed), then either runs
the librarian on embedded defaults (``librarian init`` + ``librarian serve``) or the checks
(ruff, then the whole pytest suite, PostgreSQL tests included). Extra arguments after
``test`` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".librarian-install"
CHROMIUM = os.environ.get("LIBRARIAN_TEST_CHROMIUM", "/usr/bin/chromium")


def run(*argv: str | Path, env: dict[str, str] | None = None) -> int:
    return subprocess.call([str(part) for part in argv], cwd=ROOT, env=env)


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be run by an older python3)
        sys.exit(f"librarian needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing librarian_dagster and its pinned dependencies", flush=True)
    quiet = ["--quiet"] if os.environ.get("CI") else []
    steps = [
        [BIN / "python", "-m", "pip", "install", *quiet, "--upgrade", "pip"],
        [BIN / "python", "-m", "pip", "install", *quiet, "-e", f"{ROOT}[test]"],
        [BIN / "python", "-m", "pip", "check"],
    ]
    for step in steps:
        if run(*step) != 0:
            sys.exit(f"install step failed: {' '.join(map(str, step))}")
    STAMP.write_text(wanted)


def serve(extra: list[str]) -> int:
    code = run(BIN / "librarian", "init")
    if code != 0:
        return code
    # Become `librarian serve`: Ctrl-C and SIGTERM then reach it directly, whoever sends them.
    os.chdir(ROOT)
    os.execv(BIN / "librarian", [str(BIN / "librarian"), "serve", *extra])


def ensure_chromium() -> None:
    """tests/test_api_docs.py renders the API docs in Debian's Chromium: as root, install it."""
    if Path(CHROMIUM).exists() or os.geteuid() != 0:
        return  # that test then fails, saying how to install it
    print("installing Debian's chromium (apt-get) for tests/test_api_docs.py", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "-qq", "update"], ["apt-get", "-qq", "install", "-y", "chromium"]):
        subprocess.call(argv, env=env, stdout=subprocess.DEVNULL)


def test(extra: list[str]) -> int:
    ensure_chromium()
    if run(BIN / "ruff", "check", "librarian_dagster", "tests", "benchmarks", "dev.py") != 0:
        return 1
    if (
        run(BIN / "ruff", "format", "--check", "librarian_dagster", "tests", "benchmarks", "dev.py")
        != 0
    ):
        return 1
    code = run(BIN / "python", "-m", "pytest", *extra)
    if code == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
        return 1
    return code


def main() -> int:
    commands = {"serve": serve, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]", file=sys.stderr)
        return 2
    ensure_environment()
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
