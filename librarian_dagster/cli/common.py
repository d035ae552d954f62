"""What every ``librarian`` command shares: finding the config, one-line errors.

Any ``ServiceError``, ``SettingsError``, ``StoreError`` or (client commands) ``LibrarianError``
becomes one red line on stderr and exit code 1 (2 for usage errors, which typer reports
itself); tracebacks are for bugs only.

Which librarian a server-side command acts on (docs/deployment.md, "Which librarian a
command acts on"), first match wins:

1. ``--config FILE``;
2. ``LIBRARIAN_CONFIG``;
3. ``./librarian.toml``;
4. for ``init`` and ``serve``: the embedded defaults, with the data dir ``./.librarian``
   (that is how the README's first command runs); for the other commands: ``./.librarian``
   if a catalogue is there, else the one librarian whose ``serve`` is running for this user
   (``serve_lock.running_librarians``). Anything else is an error that says what to pass.

No command but ``init`` creates a catalogue (``services.bootstrap.open_catalogue``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from librarian_dagster.catalogue.database import Catalogue, sqlite_file
from librarian_dagster.cli.serve_lock import describe, running_librarians
from librarian_dagster.client.errors import LibrarianError
from librarian_dagster.services.bootstrap import open_catalogue
from librarian_dagster.services.errors import ServiceError
from librarian_dagster.settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    LibrarianSettings,
    SettingsError,
    load_settings,
)
from librarian_dagster.storage.errors import StoreError

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` (one line; the message is plain text, not markup)."""
    line = " ".join(message.split())
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def clear_errors() -> Iterator[None]:
    try:
        yield
    except (ServiceError, SettingsError, StoreError, LibrarianError) as error:
        raise fail(str(error)) from None


def one_line_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator for commands: expected errors become one line and a non-zero exit."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with clear_errors():
            return function(*args, **kwargs)

    return wrapper


_config_override: list[Path] = []


def set_config(path: Path | None) -> None:
    _config_override.clear()
    if path is not None:
        _config_override.append(path)


def settings() -> LibrarianSettings:
    """``init`` and ``serve``: steps 1-3, else the embedded defaults here."""
    return load_settings(_config_override[0] if _config_override else None)


def _explicit() -> bool:
    return bool(_config_override) or CONFIG_ENV in os.environ or Path(DEFAULT_CONFIG).is_file()


def admin_settings() -> LibrarianSettings:
    """The other server-side commands: steps 1-3, ``./.librarian``, or the running librarian."""
    if _explicit():
        return settings()
    here = load_settings()
    catalogue_here = sqlite_file(here.catalogue_url)
    if here.database_url or (catalogue_here is not None and catalogue_here.is_file()):
        return here
    running = running_librarians()
    if len(running) == 1:
        (found,) = running
        return load_settings(found.config_file, base_dir=found.working_dir)
    if running:
        listed = "; ".join(
            f"{item.config_file or item.data_dir} ({describe(item.record)})" for item in running
        )
        raise SettingsError(
            f"{len(running)} librarians are running ({listed}); choose one with --config "
            f"or {CONFIG_ENV}"
        )
    raise SettingsError(
        f"no librarian here: no {DEFAULT_CONFIG} in {Path.cwd()}, no {CONFIG_ENV}, no "
        "catalogue under ./.librarian and no librarian serve running; pass --config "
        f"FILE or set {CONFIG_ENV}"
    )


def catalogue(current: LibrarianSettings) -> Catalogue:
    """The catalogue of ``current``, which must exist and be current (never created)."""
    return open_catalogue(current)
