"""What every ``librarian`` command shares: settings loading and one-line errors.

Any ``ServiceError``, ``SettingsError``, ``StoreError`` or (client commands) ``LibrarianError``
becomes one red line on stderr and exit code 1 (2 for usage errors, which typer reports
itself); tracebacks are for bugs only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from librarian_dagster.client.errors import LibrarianError
from librarian_dagster.services.errors import ServiceError
from librarian_dagster.settings import LibrarianSettings, SettingsError, load_settings
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
    return load_settings(_config_override[0] if _config_override else None)
