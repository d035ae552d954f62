"""``librarian validate NAME``, ``rebuild --store``, ``scan --store``: keeping data right.

``validate``: is every copy of a book good, here and at every peer, now?

A server-side command (it reads the copies on this host and asks peers as this librarian
does): our copies are re-read, each peer holding a copy is asked to re-read its own, and
one table shows every copy with what its bytes hash to now. A peer that could not be
asked is a row that says why. Exit code 1 unless every copy matches and every peer
answered.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from librarian_dagster.cli.common import (
    admin_settings,
    catalogue,
    console,
    err_console,
    one_line_errors,
)
from librarian_dagster.peer_links import http_links
from librarian_dagster.services.integrity_rebuild import rebuild_store, scan_store
from librarian_dagster.services.integrity_validate import validate_everywhere
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.sidecars import walk


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


StoreOption = Annotated[str, typer.Option("--store", help="A store of this librarian.")]


def _store(name: str) -> tuple[LibrarianSettings, LocalStore]:
    current = admin_settings()
    stores = open_stores(current)
    if name not in stores:
        raise typer.BadParameter(
            f"no store {name!r} (stores: {', '.join(stores)})", param_hint="--store"
        )
    return current, stores[name]


@one_line_errors
def rebuild(
    store: StoreOption,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Trust the sidecars' checksums: read nothing.")
    ] = False,
) -> None:
    """Recreate files and instances from the sidecars in a store, after a catalogue loss.

    Run `librarian init` first (an empty catalogue). Nothing is deleted; a book whose bytes
    do not match its sidecar is recorded as a corrupt copy, out of service.
    """
    current, local = _store(store)
    total = sum(1 for entry in walk(local) if entry.sidecar)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err_console) as progress:
        task = progress.add_task(f"rebuilding from store {store}", total=total)
        report = rebuild_store(
            catalogue(current),
            local,
            verify=not no_verify,
            progress=lambda _name, _size: progress.advance(task),
        )
    console.print(
        f"store {store}: {len(report.recorded)} books recorded, {report.already} already "
        f"catalogued, {len(report.corrupt)} recorded as corrupt, {len(report.conflicts)} "
        f"conflicts, {len(report.unreadable)} unreadable sidecars, "
        f"{len(report.without_sidecar)} books without a sidecar; "
        f"{report.bytes_read} bytes read",
        markup=False,
        highlight=False,
    )
    for line in [*report.corrupt, *report.conflicts, *report.unreadable]:
        err_console.print(f"  {line}", markup=False, highlight=False)
    for name in report.without_sidecar[:50]:
        err_console.print(f"  {name}: no sidecar (see `librarian scan`)", markup=False)
    if report.corrupt or report.conflicts or report.unreadable:
        raise typer.Exit(1)


@one_line_errors
def scan(
    store: StoreOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Report where a store's disk and the catalogue disagree; deletes nothing.

    Dark data (on disk, not catalogued), missing data (catalogued, not on disk) and sidecar
    disagreements; exit 1 if anything is found.
    """
    current, local = _store(store)
    with console.status(f"scanning store {store}"):
        report = scan_store(catalogue(current), local)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        console.print(
            f"store {store}: {report.books_on_disk} books on disk, {report.catalogued} "
            f"catalogued; {len(report.dark)} dark, {len(report.missing)} missing, "
            f"{len(report.disagreements)} disagreements",
            markup=False,
            highlight=False,
        )
        for label, names in (
            ("dark", report.dark),
            ("missing", report.missing),
            ("disagrees", report.disagreements),
        ):
            for name in names[:200]:
                console.print(f"  {label}: {name}", markup=False, highlight=False)
    if not report.clean:
        raise typer.Exit(1)
