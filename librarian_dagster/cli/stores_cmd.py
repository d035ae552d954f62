"""``librarian store list|enable|disable``."""

from __future__ import annotations

import typer
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, one_line_errors
from librarian_dagster.services.stores import list_stores, open_stores, set_store_enabled
from librarian_dagster.units import human_size as _human

app = typer.Typer(help="Inspect and toggle stores.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_() -> None:
    """Stores with their state and free space."""
    current = admin_settings()
    stores = open_stores(current)
    table = Table("name", "kind", "enabled", "ingestable", "declared", "free", "root")
    with catalogue(current).session() as session:
        for row in list_stores(session):
            store = stores.get(row.name)
            free = _human(store.free_bytes()) if store is not None and store.root.exists() else "-"
            table.add_row(
                row.name,
                row.kind.value,
                str(row.enabled),
                str(row.ingestable),
                str(row.declared),
                free,
                row.root,
            )
    console.print(table)


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
