"""Which librarian a client command talks to: ``--server``, ``--url``/``--user``, or the config.

Precedence, first match wins:

1. ``--server NAME``: a connection from the client config (``LIBRARIAN_CLIENT_CONFIG`` or
   ``~/.config/librarian/client.toml``);
2. ``--url URL --user USER``: ad hoc, the password from ``LIBRARIAN_PASSWORD`` (prompted for
   when unset and stdin is a terminal);
3. ``LIBRARIAN_SERVER``: names a connection from the config;
4. the only connection, when exactly one is configured.

The options belong to each client command (``librarian upload --server site-a ...``), so
they can be given after the command name like all its other options.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from librarian_dagster.client import LibrarianClient, load_client_settings
from librarian_dagster.client.errors import ClientConfigError
from librarian_dagster.client.settings import client_config_path

SERVER_ENV = "LIBRARIAN_SERVER"
PASSWORD_ENV = "LIBRARIAN_PASSWORD"

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help=f"Connection name from the client config (default: ${SERVER_ENV}, or the only one).",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help=f"Librarian URL, instead of --server (password: ${PASSWORD_ENV}).",
        show_default=False,
    ),
]
UserOption = Annotated[
    str | None, typer.Option("--user", "-u", help="User name for --url.", show_default=False)
]


def _password_for(url: str, user: str) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if sys.stdin.isatty():
        return typer.prompt(f"password of {user} at {url}", hide_input=True)
    raise ClientConfigError(f"set {PASSWORD_ENV} to the password of {user!r} at {url}")


def connect(server: str | None, url: str | None, user: str | None) -> LibrarianClient:
    """A client for the chosen connection (see the module docstring for the precedence)."""
    if server and url:
        raise ClientConfigError("give --server or --url, not both")
    if url:
        if not user:
            raise ClientConfigError("--url needs --user")
        return LibrarianClient(url, user, _password_for(url, user))
    if user:
        raise ClientConfigError("--user goes with --url (a --server connection names its user)")
    settings = load_client_settings()
    name = server or os.environ.get(SERVER_ENV)
    if name:
        return LibrarianClient.from_info(settings.connection(name))
    if len(settings.connections) == 1:
        (info,) = settings.connections.values()
        return LibrarianClient.from_info(info)
    if not settings.connections:
        raise ClientConfigError(
            f"no librarian to talk to: give --url and --user, or add a connection to "
            f"{client_config_path()}"
        )
    known = ", ".join(sorted(settings.connections))
    raise ClientConfigError(
        f"several connections are configured ({known}): choose one with --server or {SERVER_ENV}"
    )
