"""``librarian peer add|list|remove|ping|pause|resume|set``: the librarians we clone to.

Run on the librarian's host, like ``user`` and ``store``: they change the catalogue
directly, with the secret key that encrypts peers' passwords. A password is read from the
environment variable ``--password-env`` names, or asked for; never from the command line
(where ``ps`` and shell histories would show it). ``add`` asks the peer, with those
credentials, who it is and who we are there before it records anything (``--no-check``
skips that, for a peer that is down now). Adding or removing a peer asks the Dagster UI to
reload, so the peer's asset appears (or goes) at once.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import (
    admin_settings,
    catalogue,
    console,
    err_console,
    fail,
    one_line_errors,
)
from librarian_dagster.dagster_instance import reload_code_location
from librarian_dagster.peer_links import http_links
from librarian_dagster.services import peers
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import MoverName
from librarian_dagster.wire import PeerCreate, PeerUpdate, first_problem

M = TypeVar("M", bound=BaseModel)

app = typer.Typer(help="Peer librarians: where books are cloned to.", no_args_is_help=True)

PasswordEnv = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        help="Environment variable holding the password of our account on the peer (default: ask).",
        show_default=False,
    ),
]
# The check at `peer add` and `peer ping` waits at most this long for the peer.
CHECK_TIMEOUT = 15.0


def _password(variable: str | None, peer: str) -> str:
    if variable is not None:
        value = os.environ.get(variable)
        if not value:
            raise fail(f"{variable} is not set (it should hold the password for {peer})")
        return value
    if not sys.stdin.isatty():
        raise fail("no password: give --password-env VAR (stdin is not a terminal to ask on)")
    return str(typer.prompt(f"password of our account on {peer}", hide_input=True))


def _reload(current: LibrarianSettings) -> None:
    problem = reload_code_location(current)
    if problem is not None:
        err_console.print(
            f"note: the Dagster UI did not reload ({escape(problem)}); its peer assets "
            "change when it next loads the code location"
        )


@app.command("add")
@one_line_errors
def add(
    name: Annotated[str, typer.Argument(help="The peer's name (what its /ping says).")],
    url: Annotated[str, typer.Option("--url", help="Its API, e.g. http://host:8080.")],
    user: Annotated[
        str, typer.Option("--user", help="Our account on it (named after this librarian).")
    ],
    password_env: PasswordEnv = None,
    mover: Annotated[
        MoverName | None,
        typer.Option(help="How books reach it (default: [transfer] default_mover)."),
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Add it with transfers paused.")] = False,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Ask the peer first (default: yes).")
    ] = True,
) -> None:
    """Add a peer: its URL and our account on it (level callback there)."""
    current = admin_settings()
    request = _validated(
        PeerCreate,
        name=name,
        url=url,
        user=user,
        password=_password(password_env, name),
        mover=mover,
        transfers_enabled=not paused,
        check=check,
    )
    peer = peers.add_peer(catalogue(current), current, request, links=http_links(CHECK_TIMEOUT))
    shown = f"{peer.name} at {peer.url} ({peer.mover}{', paused' if paused else ''})"
    console.print(f"added peer {escape(shown)}" + ("" if check else " (not checked)"))
    _reload(current)


def _validated(model: type[M], **values: object) -> M:
    """The request model, or one line saying what is wrong with the options."""
    try:
        return model(**values)
    except ValidationError as error:
        raise fail(first_problem(error)) from None


@app.command("list")
@one_line_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Peers with their health: last seen, last error, books in flight and held."""
    current = admin_settings()
    with catalogue(current).session() as session:
        infos = [peers.peer_info(summary) for summary in peers.list_peers(session)]
    if as_json:
        typer.echo(json.dumps([info.model_dump(mode="json") for info in infos], indent=2))
        return
    table = Table(
        "name",
        "url",
        "mover",
        "transfers",
        "last seen",
        "last error",
        "in flight",
        "held",
        "callbacks owed",
    )
    for info in infos:
        table.add_row(
            escape(info.name),
            escape(info.url),
            info.mover.value,
            "enabled" if info.transfers_enabled else "paused",
            f"{info.last_seen:%Y-%m-%d %H:%M}" if info.last_seen else "never",
            escape((info.last_error or "")[:60]),
            str(info.books_in_flight),
            str(info.books_held),
            str(info.callbacks_waiting),
        )
    console.print(table)


@app.command("ping")
@one_line_errors
def ping(name: str) -> None:
    """Ask a peer who it is and whether our login works there (exit 1 if not)."""
    current = admin_settings()
    result = peers.check_peer(catalogue(current), current, name, http_links(CHECK_TIMEOUT))
    if not result.ok:
        raise fail(f"{name}: {result.error}")
    console.print(
        f"{escape(name)} at {escape(result.url)}: librarian {escape(result.librarian or '')} "
        f"{result.version}, we are {escape(result.account or '')} "
        f"({result.level.value if result.level else '?'})",
        highlight=False,
    )


def _update(name: str, what: str, **changes: object) -> None:
    current = admin_settings()
    request = _validated(PeerUpdate, **changes)
    with catalogue(current).session() as session:
        peers.update_peer(session, current, name, request)
    console.print(f"peer {escape(name)} {what}")


@app.command("pause")
@one_line_errors
def pause(name: str) -> None:
    """Stop new clone batches to a peer; books in flight and callbacks go on."""
    _update(
        name,
        "paused: no new batches (books in flight and callbacks go on)",
        transfers_enabled=False,
    )


@app.command("resume")
@one_line_errors
def resume(name: str) -> None:
    """Let clone batches go to a peer again."""
    _update(name, "resumed", transfers_enabled=True)


@app.command("set")
@one_line_errors
def set_(
    name: str,
    url: Annotated[str | None, typer.Option("--url", show_default=False)] = None,
    user: Annotated[str | None, typer.Option("--user", show_default=False)] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env", help="Set the password from this variable.", show_default=False
        ),
    ] = None,
    new_password: Annotated[
        bool, typer.Option("--password", help="Ask for a new password.")
    ] = False,
    mover: Annotated[MoverName | None, typer.Option(show_default=False)] = None,
) -> None:
    """Change a peer's URL, our account or password there, or its mover."""
    password = _password(password_env, name) if (password_env or new_password) else None
    _update(name, "changed", url=url, user=user, password=password, mover=mover)


@app.command("remove")
@one_line_errors
def remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Forget a peer nothing refers to (otherwise pause it)."""
    current = admin_settings()
    if not yes and sys.stdin.isatty() and not typer.confirm(f"forget peer {name}?"):
        raise typer.Exit(1)
    with catalogue(current).session() as session:
        peers.remove_peer(session, name)
    console.print(f"removed peer {escape(name)}")
    _reload(current)
