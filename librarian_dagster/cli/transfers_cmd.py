"""``librarian transfer list|retry|cancel``: books on their way to peers (or from them)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, one_line_errors
from librarian_dagster.services import transfers
from librarian_dagster.states import TransferStatus
from librarian_dagster.units import human_size
from librarian_dagster.wire import MAX_PAGE

app = typer.Typer(help="Transfers to and from peers: list, retry, cancel.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_(
    peer: Annotated[str | None, typer.Option("--peer", help="Only this peer's.")] = None,
    status: Annotated[
        list[TransferStatus] | None,
        typer.Option("--status", help="Only these states (repeat the option for several)."),
    ] = None,
    incoming: Annotated[
        bool, typer.Option("--incoming", help="Books coming in, not going out.")
    ] = False,
    limit: Annotated[int, typer.Option(help=f"At most this many (1..{MAX_PAGE}).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Transfers, newest first."""
    current = admin_settings()
    with catalogue(current).session() as session:
        rows, more = transfers.list_transfers(
            session,
            direction="incoming" if incoming else "outgoing",
            peer=peer,
            statuses=status or (),
            limit=limit,
        )
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    table = Table("id", "peer", "name", "size", "status", "tries", "batch", "reason")
    for row in rows:
        table.add_row(
            str(row.id),
            escape(row.peer or "-"),
            escape(row.name),
            human_size(row.size),
            row.status.value,
            str(row.attempts),
            str(row.batch_id or "-"),
            escape((row.failure_reason or "")[:60]),
        )
    console.print(table)
    if more:
        console.print(f"(more than {limit}: narrow with --peer/--status or raise --limit)")


@app.command("retry")
@one_line_errors
def retry(transfer_id: int) -> None:
    """Send a failed or cancelled book again, in the next batch."""
    current = admin_settings()
    with catalogue(current).session() as session:
        info = transfers.retry_transfer(session, transfer_id)
    console.print(
        f"transfer {info.id} ({escape(info.name)} to {escape(info.peer or '?')}) "
        "will go in the next batch"
    )


@app.command("cancel")
@one_line_errors
def cancel(transfer_id: int) -> None:
    """Stop sending a book; the peer drops what it staged for it."""
    current = admin_settings()
    with catalogue(current).session() as session:
        info = transfers.cancel_transfer(session, transfer_id, "librarian transfer cancel")
    console.print(f"transfer {info.id} ({escape(info.name)}) cancelled")
