"""The table of ``librarian search``: 80 columns by default, everything with ``--wide``.

The default fits an 80-column terminal for typical names: the name first (a long one folds
onto more lines, never cut), then size in human units, creation time (local, to the
minute) and the checksum shortened to ``xxh3_128:1a2b3c4d…``; those three never wrap.
``--wide`` adds the size in bytes, the uploader and the source, shows every value in full
and keeps each file on one line, however long (the terminal may wrap it).
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from librarian_dagster.cli.common import console
from librarian_dagster.units import human_size
from librarian_dagster.wire import FileSummary

# Hex digits of a checksum the narrow search table shows: enough to tell books apart by eye.
SHORT_CHECKSUM_DIGITS = 8


def short_checksum(checksum: str) -> str:
    """``xxh3_128:1a2b3c4d…``: the algorithm and the first digits."""
    algorithm, sep, digits = checksum.partition(":")
    if not sep or len(digits) <= SHORT_CHECKSUM_DIGITS:
        return checksum
    return f"{algorithm}:{digits[:SHORT_CHECKSUM_DIGITS]}…"


def _shown_name(summary: FileSummary) -> str:
    return escape(summary.name) + ("/" if summary.is_directory else "")


def print_narrow(found: list[FileSummary]) -> None:
    """Names first, then the short columns, which never wrap: only a long name folds."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("name", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("checksum", no_wrap=True)
    for summary in found:
        created = summary.created_at.astimezone()
        table.add_row(
            _shown_name(summary),
            human_size(summary.size),
            f"{created:%Y-%m-%d %H:%M}",
            short_checksum(summary.checksum),
        )
    console.print(table, soft_wrap=False)


def print_wide(found: list[FileSummary]) -> None:
    """Every column in full, one line per file however wide (the terminal may wrap it)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "size", "bytes", "checksum", "created", "uploader", "source"):
        table.add_column(column, no_wrap=True, justify="right" if column == "bytes" else "left")
    for summary in found:
        table.add_row(
            _shown_name(summary),
            human_size(summary.size),
            str(summary.size),
            summary.checksum,
            summary.created_at.isoformat(timespec="seconds"),
            escape(summary.uploader),
            escape(summary.source),
        )
    width = Measurement.get(console, console.options.update_width(1 << 20), table).maximum
    Console(width=max(width, 1), soft_wrap=True).print(table)
