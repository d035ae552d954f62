"""``librarian store list|enable|disable``."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, one_line_errors
from librarian_dagster.services.stores import set_store_enabled, store_overview
from librarian_dagster.units import human_size as _human
from librarian_dagster.wire import StoreInfo

app = typer.Typer(help="Inspect and toggle stores.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Stores: kind, drive state, books, used and free space, and what is wrong."""
    current = admin_settings()
    with catalogue(current).session() as session:
        rows = [StoreInfo(**asdict(row)) for row in store_overview(session, current)]
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    table = Table("name", "kind", "state", "enabled", "books", "used", "free", "root")
    for column in table.columns[:-1]:
        column.no_wrap = True
    table.columns[-1].overflow = "fold"
    for row in rows:
        state = row.state.value if row.state else "-"
        table.add_row(
            row.name,
            row.kind.value,
            state,
            "yes" if row.enabled else "no",
            f"{row.books:,}",
            _human(row.used_bytes) if row.used_bytes is not None else "-",
            _human(row.free_bytes) if row.free_bytes is not None else "-",
            row.root,
        )
    console.print(table)
    for row in rows:
        if row.problem is not None:
            console.print(f"{row.name}: {escape(row.problem)}", highlight=False)


def _toggle(name: str, enabled: bool) -> None:
    current = admin_settings()
    with catalogue(current).session() as session:
        set_store_enabled(session, name, enabled)
    console.print(f"store {name} {'enabled' if enabled else 'disabled'}")


@app.command("enable")
@one_line_errors
def enable(name: str) -> None:
    """Let new data go into a store."""
    _toggle(name, True)


@app.command("disable")
@one_line_errors
def disable(name: str) -> None:
    """Stop new data going into a store (existing copies stay recorded)."""
    _toggle(name, False)
