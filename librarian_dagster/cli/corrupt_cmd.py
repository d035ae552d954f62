"""``librarian corrupt list|dismiss``: copies the integrity check found bad (admin, via API).

A client command like ``search``: it reaches the librarian chosen by ``--server`` or
``--url``/``--user`` and needs an admin account there.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import console, err_console, one_line_errors
from librarian_dagster.cli.connection import ServerOption, UrlOption, UserOption, connect

app = typer.Typer(help="Copies found corrupt or missing, until repaired.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Include repaired and dismissed records.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Unresolved corrupt or missing copies, oldest first (every page)."""
    with connect(server, url, user) as client:
        records = list(client.iter_corrupt(include_resolved=include_resolved))
    if as_json:
        typer.echo(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return
    table = Table("id", "name", "store", "problem", "status", "detected")
    for record in records:
        table.add_row(  # names may hold [ ]: never markup
            str(record.id),
            escape(record.name),
            escape(record.store),
            record.reason.label,
            record.status.value,
            f"{record.detected_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)
    unresolved = sum(record.resolved_at is None for record in records)
    err_console.print(f"{unresolved} unresolved corrupt cop{'y' if unresolved == 1 else 'ies'}")


@app.command("dismiss")
@one_line_errors
def dismiss(
    record_id: Annotated[int, typer.Argument(help="The record's id (from `corrupt list`).")],
    note: Annotated[str, typer.Option("--note", help="Why it is closed (kept with it).")],
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Close a record by hand; the copy stays out of service and nothing is deleted."""
    with connect(server, url, user) as client:
        record = client.dismiss_corrupt(record_id, note)
    console.print(
        f"record {record.id} ({record.name} in store {record.store}) dismissed",
        markup=False,
        highlight=False,
    )
