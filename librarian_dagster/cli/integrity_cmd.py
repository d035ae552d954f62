"""``librarian validate NAME``: is every copy of a book good, here and at every peer, now?

A server-side command (it reads the copies on this host and asks peers as this librarian
does): our copies are re-read, each peer holding a copy is asked to re-read its own, and
one table shows every copy with what its bytes hash to now. A peer that could not be
asked is a row that says why. Exit code 1 unless every copy matches and every peer
answered.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, one_line_errors
from librarian_dagster.peer_links import http_links
from librarian_dagster.services.integrity_validate import validate_everywhere
from librarian_dagster.services.stores import open_stores


@one_line_errors
def validate(
    name: Annotated[str, typer.Argument(help="The book's name in the catalogue.")],
) -> None:
    """Re-read every copy of a book here and ask every peer holding one to re-read its own."""
    current = admin_settings()
    links = http_links(current.transfer.peer_timeout_seconds)
    with console.status(f"reading the copies of {name} here and at its peers"):
        here, peers = validate_everywhere(
            catalogue(current), open_stores(current), current, links, name
        )
    table = Table("librarian", "store", "matches", "checksum now", "when", "problem")
    rows = [(here.librarian, copy) for copy in here.copies]
    rows += [(peer.peer, copy) for peer in peers if peer.answer for copy in peer.answer.copies]
    good = True
    for librarian, copy in rows:
        good &= copy.matches
        table.add_row(
            escape(librarian),
            escape(copy.store),
            "yes" if copy.matches else "[bold red]NO[/]",
            copy.checksum or "-",
            f"{copy.when:%Y-%m-%d %H:%M:%S}",
            escape(copy.problem or ""),
        )
    for peer in peers:
        if peer.answer is None:
            good = False
            table.add_row(
                escape(peer.peer), "-", "[bold red]?[/]", "-", "-", escape(peer.problem or "")
            )
        elif not peer.answer.copies:
            good = False
            table.add_row(escape(peer.peer), "-", "[bold red]NO[/]", "-", "-", "holds no copy now")
    console.print(f"{escape(here.name)}: expected {here.checksum}", highlight=False)
    console.print(table)
    if not good:
        raise typer.Exit(1)
