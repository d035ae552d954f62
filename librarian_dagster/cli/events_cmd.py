"""``librarian events list|resolve``: the operator event log, on the librarian's host.

A server-side command like ``transfer``: it reads the catalogue of the librarian whose
config it finds (``serve``'s rules) and needs no account. The same list and resolve are at
``/api/v2/events`` (admin) for scripts elsewhere.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, one_line_errors
from librarian_dagster.services import events
from librarian_dagster.states import Severity
from librarian_dagster.wire import MAX_PAGE

app = typer.Typer(help="Operator events: what went wrong, until resolved.", no_args_is_help=True)


@app.command("list")
@one_line_errors
def list_(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Include resolved events.")
    ] = False,
    severity: Annotated[
        Severity | None, typer.Option("--severity", help="This severity and graver only.")
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind.")] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only about this book, store or peer.")
    ] = None,
    limit: Annotated[int, typer.Option(help=f"At most this many (1..{MAX_PAGE}).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open events, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise typer.BadParameter(f"must be between 1 and {MAX_PAGE}", param_hint="--limit")
    current = admin_settings()
    with catalogue(current).session() as session:
        rows, more = events.list_events(
            session,
            include_resolved=include_resolved,
            severity=severity,
            kind=kind,
            subject=subject,
            limit=limit,
        )
        infos = [events.event_info(row) for row in rows]
        still_open = events.count_open(session)
    if as_json:
        typer.echo(json.dumps([info.model_dump(mode="json") for info in infos], indent=2))
        return
    table = Table("id", "severity", "kind", "subject", "times", "last seen", "message")
    for info in infos:
        last = info.last_at or info.created_at
        table.add_row(  # names may hold [ ]: never markup
            str(info.id) + ("" if not info.resolved else " (resolved)"),
            info.severity.value,
            escape(info.kind),
            escape(info.subject or "-"),
            str(info.count),
            f"{last:%Y-%m-%d %H:%M}",
            escape(info.message[:200]),
        )
    console.print(table)
    if more:
        console.print(f"(more than {limit}: narrow with --severity/--kind or raise --limit)")
    console.print(f"{still_open} open event{'' if still_open == 1 else 's'}")


@app.command("resolve")
@one_line_errors
def resolve(
    event_ids: Annotated[list[int], typer.Argument(help="Event ids (from `events list`).")],
    note: Annotated[str, typer.Option("--note", help="Why it is closed (kept with it).")],
) -> None:
    """Close events; a resolved burst_guard also lets repair and deletion run again."""
    current = admin_settings()
    by = f"cli:{getpass.getuser()}"
    with catalogue(current).session() as session:
        closed = events.resolve_events(session, event_ids, by, note)
        lines = [f"event {event.id} ({event.kind}) resolved" for event in closed]
    for line in lines:
        console.print(line, markup=False, highlight=False)
