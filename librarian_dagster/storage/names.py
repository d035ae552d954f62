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
    "validate_new_name",
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
# Categories refused in new names: format characters (bidi overrides, zero-width characters,
# soft hyphens: invisible, or reordering what is shown), line and paragraph separators.
_REFUSED_CATEGORIES = {
    "Cf": "the invisible format character",
    "Zl": "the line separator",
    "Zp": "the paragraph separator",
}
# Default-ignorable code points that are not Cf (Unicode's DerivedCoreProperties): they
# render as nothing. Combining grapheme joiner, Hangul fillers, Mongolian free variation
# selectors, variation selectors, tags and their supplement.
_DEFAULT_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0000, 0xE0FFF),
)


class InvalidNameError(ValueError):
    """A catalogue name that cannot be used safely; the message names the problem."""


def normalise_name(name: str) -> str:
    """The NFC form of a name as a user typed it: what the API and the client send.

    "café" typed on macOS (NFD) and on Linux (NFC) is one book; entry points normalise, and
    :func:`validate_new_name` then refuses any name still not in NFC, so two spellings of
    one name can never become two books.
    """
    return unicodedata.normalize("NFC", name) if isinstance(name, str) else name


def validate_name(name: str) -> str:
    """Return ``name`` as a relative POSIX path, or raise :class:`InvalidNameError`.

    What any path the librarian handles must be to be held safely: a catalogued name (also
    one catalogued before the stricter rules of :func:`validate_new_name`), a path inside a
    book (a tar member, kept byte for byte as the client hashed it). Only names already in
    canonical form are accepted (no empty, "." or ".." segments), so the returned name is
    the given one: silently rewriting a name would let two requests address one book.
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


def validate_new_name(name: str) -> str:
    """:func:`validate_name` plus what a *new* book's name must be: unambiguous to a reader.

    For the entry points (staging an upload, registering an inbox book, the client): the
    name must be NFC and hold nothing invisible or deceptive (format characters such as
    bidi overrides and zero-width characters, other default-ignorable characters,
    non-ASCII spaces, line separators, look-alikes of ``/``, ``\\`` and ``.``), so two
    names that look alike cannot be two books.
    """
    validate_name(name)
    if not unicodedata.is_normalized("NFC", name):
        raise InvalidNameError(
            f"{_show(name)} is not in Unicode NFC form (it has combining sequences that NFC "
            f"composes); send {normalise_name(name)!a}"
        )
    for char in name:
        if char.isascii():
            continue
        reason = _deceptive(char)
        if reason is not None:
            raise InvalidNameError(f"{_show(name)} contains {reason} {_codepoint(char)}")
    return name


def _deceptive(char: str) -> str | None:
    """Why a non-ASCII character would make a name deceptive, or None."""
    label = _REFUSED_CATEGORIES.get(unicodedata.category(char))
    if label is not None:
        return label
    code = ord(char)
    if any(low <= code <= high for low, high in _DEFAULT_IGNORABLE):
        return "the invisible character"
    if unicodedata.category(char) == "Zs":
        return "the non-ASCII space"
    compatible = unicodedata.normalize("NFKC", char)
    if char in _LOOKALIKE_SEPARATORS or any(c in compatible for c in "/\\."):
        return "a look-alike of '/' or '.':"
    return None


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
