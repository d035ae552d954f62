"""``librarian upload|upload status|search|locate``: the client commands, talking to the API.

They run anywhere (no librarian config needed), reach the server chosen by
``cli.connection``, and go through ``LibrarianClient`` like any script would, so the CLI
and the Python client cannot disagree.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from librarian_dagster.cli import search_table
from librarian_dagster.cli.common import console, err_console, fail, one_line_errors
from librarian_dagster.cli.connection import ServerOption, UrlOption, UserOption, connect
from librarian_dagster.cli.default_group import DefaultCommandGroup
from librarian_dagster.client import UploadFailed, file_query
from librarian_dagster.client.transfer import scan_book
from librarian_dagster.states import TransferStatus
from librarian_dagster.units import human_size
from librarian_dagster.wire import FileInfo, InstanceInfo, UploadInfo


class TransferChoice(StrEnum):
    auto = "auto"
    local = "local"
    http = "http"


def _moment(text: str | None, option: str) -> datetime | None:
    """ISO 8601 date or time; without a zone it means local time."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option}: {text!r} is not an ISO 8601 date or time") from None


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}".strip() if moment else "never"


def upload_pairs(sources: list[str], dest: str) -> list[tuple[Path, str]]:
    """One source: DEST is its name. Several (or DEST ending in /): DEST/<basename> each.

    The basename is that of the path as given (``abspath``, not ``resolve``: a symlink
    to a book uploads under the link's name).
    """
    if len(sources) == 1 and not dest.endswith("/"):
        return [(Path(sources[0]), dest)]
    prefix = dest.rstrip("/")
    return [
        (Path(source), f"{prefix}/{os.path.basename(os.path.abspath(source))}")
        for source in sources
    ]


class UploadDisplay:
    """Progress on stderr: bytes read (hashed and copied), then the wait for ingest."""

    def __init__(self, total_bytes: int) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.total_bytes = total_bytes
        self.copy = self.progress.add_task("copying", total=total_bytes or 1, amount="")
        self.wait: TaskID | None = None

    def copied(self, n: int) -> None:
        self.progress.advance(self.copy, n)
        done = self.progress.tasks[self.copy].completed
        amount = f"{human_size(int(done))}/{human_size(self.total_bytes)}"
        self.progress.update(self.copy, amount=amount)

    def waiting(self, done: int, total: int) -> None:
        if self.wait is None:
            self.progress.update(self.copy, completed=self.total_bytes or 1)
            self.wait = self.progress.add_task("waiting for ingest", total=total, amount="")
        self.progress.update(self.wait, completed=done, amount=f"{done}/{total} stored")


def _print_stored(info: UploadInfo) -> None:
    verb = (
        "stored"
        if info.status == TransferStatus.STORED
        else f"{info.status.value} (upload {info.upload_id})"
    )
    console.print(
        f"{verb}  {info.name}  {info.checksum or ''}  {human_size(info.size)}",
        markup=False,
        highlight=False,
    )


def _print_staged(info: UploadInfo) -> None:
    """``--no-wait``: the upload id alone on stdout (for scripts), what it is on stderr."""
    typer.echo(str(info.upload_id))
    err_console.print(
        f"{info.status.value} (upload {info.upload_id})  {info.name}  {info.checksum or ''}  "
        f"{human_size(info.size)}",
        markup=False,
        highlight=False,
    )


@one_line_errors
def upload(
    sources: Annotated[
        list[str],
        typer.Argument(help="Files or directories to upload.", metavar="LOCAL", show_default=False),
    ],
    dest: Annotated[
        str,
        typer.Argument(
            help="The name (one LOCAL), or a prefix that each LOCAL's basename goes under "
            "(several, or ending in /).",
            metavar="DEST",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the books are stored.")
    ] = True,
    transfer: Annotated[
        TransferChoice,
        typer.Option(
            help="local: copy into shared staging; http: stream it; auto: local when reachable."
        ),
    ] = TransferChoice.auto,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for ingest before giving up.")
    ] = 3600.0,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Upload books: `upload LOCAL DEST` names one; `upload A B C PREFIX/` puts each under it.

    With --no-wait, stdout is the upload ids, one per line, for `librarian upload status ID...`.
    """
    pairs = upload_pairs(sources, dest)
    report = _print_stored if wait else _print_staged
    total = 0
    for source, _ in pairs:
        with contextlib.suppress(OSError, ValueError):  # the client reports these properly
            total += scan_book(source).size
    with connect(server, url, user) as client:
        display = UploadDisplay(total)
        try:
            with display.progress:
                infos = client.upload_many(
                    pairs,
                    wait=wait,
                    timeout=timeout,
                    progress=display.copied,
                    transfer=transfer.value,
                    on_wait=display.waiting,
                )
        except UploadFailed as error:
            for info in error.stored:
                report(info)
            raise
    for info in infos:
        report(info)


@one_line_errors
def upload_status(
    upload_ids: Annotated[
        list[int],
        typer.Argument(
            help="Upload ids, as `librarian upload --no-wait` prints them.",
            metavar="ID",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of text.")] = False,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Show uploads' status: initiated, staged, verifying, stored, failed or cancelled.

    One line per id: id, status, name, and the reason for a failed or cancelled one.
    """
    with connect(server, url, user) as client:
        if len(upload_ids) == 1:
            infos = [client.get_upload(upload_ids[0])]
        else:
            infos = client.get_uploads(upload_ids)
    for info in infos:
        if as_json:
            typer.echo(info.model_dump_json())
            continue
        line = f"{info.upload_id}  {info.status.value}  {info.name}"
        if info.failure_reason and info.status != TransferStatus.STORED:
            line += f"  {' '.join(info.failure_reason.split())}"
        console.print(line, markup=False, highlight=False)


def _upload_app() -> typer.Typer:
    """The ``upload`` group: the upload itself as its default, and ``status``."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(
        epilog="Also: `librarian upload status ID...` shows uploads' status "
        "(ids as --no-wait prints them)."
    )(upload)
    default = typer.main.get_command(single)

    class Upload(DefaultCommandGroup):
        default_command = default

    group = typer.Typer(
        cls=Upload,
        help="Upload books (`upload LOCAL... DEST`), or show uploads' status "
        "(`upload status ID...`).",
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    group.command("status")(upload_status)
    return group


@one_line_errors
def search(
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="Name glob: * and ? stay within one /-separated segment, ** crosses /.",
            show_default=False,
        ),
    ] = None,
    uploader: Annotated[str | None, typer.Option(show_default=False)] = None,
    source: Annotated[
        str | None, typer.Option(help="Librarian the file came from.", show_default=False)
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Created at or after (ISO 8601).", show_default=False)
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before (ISO 8601).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many files.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", "-w", help="Every column (uploader, source, bytes too), nothing shortened."
        ),
    ] = False,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Search the catalogue (oldest first).

    The table fits 80 columns: name, size, created (local time), checksum shortened; a
    name too long for its column folds onto more lines. --wide shows everything in full.
    """
    query = file_query(
        name,
        uploader,
        source,
        _moment(since, "--since"),
        _moment(until, "--until"),
        page_size=limit,
    )
    with connect(server, url, user) as client:
        found = list(itertools.islice(client.iter_query(query), limit))
    if as_json:
        for summary in found:
            typer.echo(summary.model_dump_json())
        return
    if wide:
        search_table.print_wide(found)
    else:
        search_table.print_narrow(found)
    more = " (there may be more: raise --limit)" if len(found) == limit else ""
    err_console.print(f"{len(found)} file(s){more}", highlight=False)


def _instance_state(instance: InstanceInfo) -> str:
    """What is wrong with a copy, if anything: corrupt (or missing) beats unavailable."""
    if instance.corrupt is not None:
        return f"  [{instance.corrupt.label}: see `librarian corrupt list`]"
    return "" if instance.available else "  [unavailable]"


def _print_location(info: FileInfo) -> None:
    kind = "directory" if info.is_directory else "file"
    lines = [
        f"name      {info.name}",
        f"checksum  {info.checksum}",
        f"size      {human_size(info.size)} ({info.size} bytes, {kind})",
        f"created   {_when(info.created_at)} by {info.uploader} at {info.source}",
        f"instances ({len(info.instances)}):",
    ]
    for instance in info.instances:
        state = _instance_state(instance)
        lines.append(
            f"  store {instance.store}  {instance.path}  "
            f"verified {_when(instance.verified_at)}{state}"
        )
    lines.append(f"remote instances ({len(info.remote_instances)}):")
    for remote in info.remote_instances:
        lines.append(
            f"  librarian {remote.librarian}  store {remote.store}  "
            f"verified {_when(remote.verified_at)}"
        )
    for line in lines:
        console.print(line, markup=False, highlight=False)


@one_line_errors
def locate(
    name: Annotated[str, typer.Argument(help="The file's catalogue name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON record.")] = False,
    server: ServerOption = None,
    url: UrlOption = None,
    user: UserOption = None,
) -> None:
    """Show a file's checksum, size and every copy: local instances and remote ones."""
    with connect(server, url, user) as client:
        info = client.get_file(name)
    if as_json:
        typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))
    else:
        _print_location(info)


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``librarian`` app."""
    app.add_typer(_upload_app(), name="upload")
    app.command("search")(search)
    app.command("locate")(locate)
