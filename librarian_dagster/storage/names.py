"""The one validator of catalogue names.

A book's name is used as a catalogue key, as a path below a store's root, as a
Dagster dynamic partition key, as a URL path segment and as a CLI argument.
Every layer calls :func:`validate_name` so that they all agree on what a name
is; a name that any one of them cannot hold safely is refused everywhere.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_NAME_BYTES", "MAX_SEGMENT_BYTES", "InvalidNameError", "validate_name"]

#: Longest segment most POSIX filesystems accept (NAME_MAX).
MAX_SEGMENT_BYTES = 255
#: Longest whole name; well below PATH_MAX so that a store root still fits in front of it.
MAX_NAME_BYTES = 1024

# "," breaks the Dagster UI's backfill selection; "..." is Dagster's partition-range
# syntax (dagster refuses it in static partition keys for that reason).
_FORBIDDEN_SUBSTRINGS: dict[str, str] = {
    "\\": "a backslash",
    ",": "a comma",
    "...": "'...'",
}
_SHOWN_CHARS = 60


class InvalidNameError(ValueError):
    """A catalogue name that cannot be used safely; the message names the problem."""


def validate_name(name: str) -> str:
    """Return ``name`` as a relative POSIX path, or raise :class:`InvalidNameError`.

    Only names already in canonical form are accepted (no empty, "." or ".."
    segments), so the returned name is the given one: silently rewriting a name
    would let two different requests address the same book.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"a name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError("the name is empty")
    _check_characters(name)
    if len(_utf8(name)) > MAX_NAME_BYTES:
        raise InvalidNameError(f"{_show(name)} is longer than {MAX_NAME_BYTES} UTF-8 bytes")
    if name.startswith("/"):
        raise InvalidNameError(f"{_show(name)} is absolute; names are relative to the store")
    for segment in name.split("/"):
        _check_segment(name, segment)
    return name


def _check_characters(name: str) -> None:
    """Refuse characters that a filesystem, a log line or Dagster cannot hold safely."""
    for char in name:
        if unicodedata.category(char) == "Cc":
            raise InvalidNameError(f"{_show(name)} contains the control character {char!r}")
    for substring, label in _FORBIDDEN_SUBSTRINGS.items():
        if substring in name:
            raise InvalidNameError(f"{_show(name)} contains {label}")
    _utf8(name)


def _check_segment(name: str, segment: str) -> None:
    """Refuse one path segment that would be ambiguous or unstorable."""
    if not segment:
        raise InvalidNameError(f"{_show(name)} has an empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidNameError(f"{_show(name)} has a {segment!r} segment")
    if segment[0].isspace() or segment[-1].isspace():
        raise InvalidNameError(f"{_show(name)} has a segment with leading or trailing whitespace")
    if len(_utf8(segment)) > MAX_SEGMENT_BYTES:
        raise InvalidNameError(
            f"{_show(name)} has a segment longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"
        )


def _utf8(text: str) -> bytes:
    """Encode strictly: a lone surrogate (from a mis-decoded filename) is not a name."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidNameError(f"{_show(text)} is not valid Unicode ({exc.reason})") from None


def _show(name: str) -> str:
    """A short, single-line, escaped rendering of a name for error messages."""
    if len(name) > _SHOWN_CHARS:
        return repr(name[:_SHOWN_CHARS]) + "..."
    return repr(name)
