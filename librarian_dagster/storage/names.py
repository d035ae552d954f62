"""The one validator of catalogue names.

A book's name is used as a catalogue key, as a path below a store's root, as a
Dagster dynamic partition key, as a URL path segment and as a CLI argument.
Every layer calls :func:`validate_name` so that they all agree on what a name
is; a name that any one of them cannot hold safely is refused everywhere.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_SEGMENT_BYTES",
    "InvalidNameError",
    "normalise_name",
    "validate_name",
]

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

# Characters that look like a path separator or a dot but are not one: a name holding them
# reads like another name (``2026/11`` with a division slash is not in directory ``2026``).
# Compatibility forms of "/", "\\" and "." (fullwidth, small, leaders) are found through NFKC.
_LOOKALIKE_SEPARATORS = frozenset(
    "\u2215\u2044\u2571\u2572\u29f5\u29f8\u29f9\u2216\ufe68\u27cb\u27cd\u2cf9\u2cfa"
)
# Categories refused outright: controls, format characters (bidi overrides, zero-width
# characters, soft hyphens: invisible, or reordering what is shown), line and paragraph
# separators, surrogates.
_REFUSED_CATEGORIES = {
    "Cc": "the control character",
    "Cf": "the invisible format character",
    "Zl": "the line separator",
    "Zp": "the paragraph separator",
    "Cs": "the lone surrogate",
}


class InvalidNameError(ValueError):
    """A catalogue name that cannot be used safely; the message names the problem."""


def normalise_name(name: str) -> str:
    """The NFC form of a name as a user typed it: what the API and the client send.

    "café" typed on macOS (NFD) and on Linux (NFC) is one book; entry points normalise, and
    :func:`validate_name` then refuses any name still not in NFC, so two spellings of one
    name can never become two books.
    """
    return unicodedata.normalize("NFC", name) if isinstance(name, str) else name


def validate_name(name: str, *, require_nfc: bool = True) -> str:
    """Return ``name`` as a relative POSIX path, or raise :class:`InvalidNameError`.

    Only names already in canonical form are accepted (NFC, no empty, "." or ".."
    segments), so the returned name is the given one: silently rewriting a name
    would let two different requests address the same book. ``require_nfc=False`` is for
    paths *inside* a book (a tar member), which are kept byte for byte as the client
    hashed them.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"a name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError("the name is empty")
    _check_characters(name)
    if require_nfc and not unicodedata.is_normalized("NFC", name):
        raise InvalidNameError(
            f"{_show(name)} is not in Unicode NFC form; send {_show(normalise_name(name))}"
        )
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
        if char.isascii() and char.isprintable():
            continue
        label = _REFUSED_CATEGORIES.get(unicodedata.category(char))
        if label is not None:
            raise InvalidNameError(f"{_show(name)} contains {label} {_codepoint(char)}")
        compatible = unicodedata.normalize("NFKC", char)
        if char in _LOOKALIKE_SEPARATORS or any(c in compatible for c in "/\\."):
            raise InvalidNameError(
                f"{_show(name)} contains {_codepoint(char)}, which looks like a separator "
                "or a dot; use '/' or '.'"
            )
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


def _codepoint(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


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
