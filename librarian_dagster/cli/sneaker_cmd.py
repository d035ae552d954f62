"""``librarian sneaker manifest|ingest|wipe``: ship books on drives (SneakerNet).

``manifest`` and ``wipe`` are server-side commands (they act on this librarian's drives, as
``store list`` does); ``ingest`` is a client command like ``upload``: it asks the librarian
chosen by ``--server`` or ``--url``/``--user`` to ingest a drive mounted on its machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from librarian_dagster.cli.common import (
    admin_settings,
    catalogue,
    console,
    err_console,
    fail,
    one_line_errors,
)
from librarian_dagster.cli.connection import ServerOption, UrlOption, UserOption, connect
from librarian_dagster.client.sneaker import ingest_drive, read_manifest, wait_for_drive
from librarian_dagster.services.sneaker_manifest import write_manifest
from librarian_dagster.services.sneaker_return import forget_lost_drive, wipe_drive
from librarian_dagster.units import human_size
from librarian_dagster.wire.sneaker import SneakerBook, SneakerIngestStatus

_UNDER_WAY = ("waiting", "copying")

app = typer.Typer(help="Ship books on drives: manifest, ingest, wipe.", no_args_is_help=True)


@app.command("manifest")
@one_line_errors
def manifest(
    store: Annotated[str, typer.Option("--store", help="The sneaker store (drive) to ship.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write a copy of the manifest.")],
    force: Annotated[
        bool, typer.Option("--force", help="Write it although the drive is still filling.")
    ] = False,
) -> None:
    """Write a drive's manifest onto it and to --out; the drive is then in transit."""
    current = admin_settings()
    written = write_manifest(catalogue(current), current, store, out.absolute(), force=force)
    books = len(written.manifest.books)
    console.print(
        f"manifest of drive {written.manifest.drive_uuid} ({store}): {books} books, "
        f"{human_size(written.bytes)}; written to {written.on_drive} and {written.out}. "
        f"The drive is in transit: unmount it and ship it.",
        highlight=False,
    )


@app.command("ingest")
@one_line_errors
def ingest(
    drive: Annotated[
        str, typer.Option("--drive", help="The drive's mount point on the librarian's machine.")
    ],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="The manifest (default: the one on the drive)."),
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Where to put the books (default: chosen).")
    ] = None,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Ask a librarian to ingest a drive mounted on its machine; wait until it is done."""
    given = read_manifest(manifest) if manifest is not None else None
    with connect(server, url, user) as client:
        status = ingest_drive(client, drive, given, store)
        books = {book.name: book for book in status.books}
        if any(book.state in _UNDER_WAY for book in books.values()):
            with _DriveProgress(books) as shown:
                final = wait_for_drive(client, status.drive_uuid, seen=shown.update)
            books.update({book.name: book for book in final.books})
    refused = _summary(status, list(books.values()))
    if refused:
        raise typer.Exit(1)


class _DriveProgress:
    """A bar on stderr: bytes of the drive's books stored (or found here) so far."""

    def __init__(self, books: dict[str, SneakerBook]) -> None:
        self.books = books
        self.total = sum(book.size for book in books.values()) or 1
        self.progress = Progress(
            TextColumn("ingesting"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.task = self.progress.add_task("ingest", total=self.total, amount="")

    def __enter__(self) -> _DriveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, status: SneakerIngestStatus) -> None:
        self.books.update({book.name: book for book in status.books})
        done = sum(b.size for b in self.books.values() if b.state not in _UNDER_WAY)
        amount = f"{human_size(done)}/{human_size(self.total)}"
        self.progress.update(self.task, completed=done, amount=amount)


def _summary(status: SneakerIngestStatus, books: list[SneakerBook]) -> list[SneakerBook]:
    """Print what became of the drive's books; the refused ones."""
    table = Table("state", "books", "size", title=f"drive {status.drive_uuid} from {status.origin}")
    for state in ("stored", "present", "refused", "waiting", "copying"):
        found = [book for book in books if book.state == state]
        if found:
            table.add_row(state, f"{len(found):,}", human_size(sum(b.size for b in found)))
    console.print(table)
    refused = [book for book in books if book.state == "refused"]
    for book in refused:
        err_console.print(
            f"refused: {escape(book.name)}: {escape(book.reason or '')}", highlight=False
        )
    return refused


@app.command("wipe")
@one_line_errors
def wipe(
    store: Annotated[str, typer.Option("--store", help="The sneaker store (drive) to wipe.")],
    lost: Annotated[
        bool,
        typer.Option("--lost", help="The drive is lost: forget its copies (no disk is touched)."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also wipe books no peer confirmed that have another copy in service here "
            "(they go on a later trip); never a book's only copy.",
        ),
    ] = False,
) -> None:
    """Remove a returned drive's books (all held elsewhere) so it can be filled again."""
    current = admin_settings()
    if lost and force:
        raise fail("give --lost or --force, not both", code=2)
    if lost:
        forgotten = forget_lost_drive(catalogue(current), current, store)
        console.print(
            f"drive {forgotten.drive_uuid} ({store}) marked lost: {forgotten.books} copies "
            "forgotten; mount a new empty drive and run librarian init to provision it.",
            highlight=False,
        )
        for name in forgotten.without_copies:
            err_console.print(f"no copy left anywhere: {escape(name)}", highlight=False)
        return
    wiped = wipe_drive(catalogue(current), current, store, force=force)
    console.print(
        f"drive {wiped.drive_uuid} ({store}) wiped: {wiped.books} books, "
        f"{human_size(wiped.bytes)} removed; it is filling again.",
        highlight=False,
    )
