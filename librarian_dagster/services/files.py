"""Catalogue reads: is a name taken, search files (keyset-paged), locate one file's copies."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.models import File, Instance, RemoteInstance
from librarian_dagster.services.errors import InvalidRequest, NotFound
from librarian_dagster.storage.names import normalise_name
from librarian_dagster.wire.common import MAX_ID
from librarian_dagster.wire.files import FileQuery


def is_catalogued(session: Session, name: str) -> bool:
    """Whether a file of this name exists (names are immutable: it is taken for good)."""
    return session.scalar(select(File.id).where(File.name == name)) is not None


# Name globs: ``?`` is one character and ``*`` any run of characters, neither of them ``/``;
# ``**`` (two or more ``*``) is any run of characters, ``/`` included. LIKE cannot say "not
# /", so a search filters twice: the LIKE of ``glob_to_like`` (``*`` and ``**`` as ``%``,
# which a name index can serve for a literal prefix) and the exact test, in SQL too so that
# pages stay full and keyset paging skips nothing: a POSIX regular expression on PostgreSQL
# (``glob_to_regex``), and on SQLite the function ``librarian_glob`` registered on the
# connection, a matcher (``glob_matcher``) whose cost is linear in the name's length: the
# backtracking of Python's ``re`` could spend hours on ``*a*a*a…b`` against a long name.
_GLOB_TOKENS = re.compile(r"\*+|\?|[^*?]+")
SQLITE_GLOB_FUNCTION = "librarian_glob"


def _glob_tokens(pattern: str) -> list[str]:
    """``*``, ``**`` (any longer run of ``*`` too), ``?`` and runs of literal characters."""
    return [token if token[0] != "*" else token[:2] for token in _GLOB_TOKENS.findall(pattern)]


def glob_to_like(pattern: str) -> str:
    """``2026/11/*`` → ``2026/11/%`` with LIKE's own wildcards escaped (escape char ``\\``).

    A prefilter: ``*`` becomes ``%``, which also matches ``/`` (see ``glob_matches``).
    """
    like = []
    for token in _glob_tokens(pattern):
        if token[0] == "*":
            like.append("%")
        elif token == "?":
            like.append("_")
        else:
            like.append(token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
    return "".join(like)


def _regex_literal(text: str) -> str:
    """``text`` as literal characters, read alike by PostgreSQL's AREs and Python's ``re``.

    Both take a backslash before ASCII punctuation as that character; letters, digits,
    ``/`` and non-ASCII characters stand for themselves.
    """
    return "".join("\\" + c if c.isascii() and not c.isalnum() and c != "/" else c for c in text)


def glob_to_regex(pattern: str) -> str:
    """The exact meaning of a name glob as an anchored regular expression (PostgreSQL ``~``)."""
    parts = []
    for token in _glob_tokens(pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(_regex_literal(token))
    return "^" + "".join(parts) + "$"


@functools.lru_cache(maxsize=128)
def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A test of whole names against a glob, in time linear in the name's length.

    A bit-parallel NFA (shift-and): bit ``i`` of the state says the first ``i`` tokens of
    the glob match what was read so far. A star's bit stays set while it may take more
    characters, and is entered (without reading) from the bit before it; runs of ``*`` are
    one token, so two stars are never adjacent and one step closes the state.
    """
    tokens = _glob_tokens(pattern)
    literal_bits: dict[str, int] = {}  # character → bits of the positions it may advance
    any_but_slash = star = star_star = 0
    position = 0
    for token in tokens:
        if token == "**":
            position += 1
            star_star |= 1 << position
        elif token == "*":
            position += 1
            star |= 1 << position
        elif token == "?":
            position += 1
            any_but_slash |= 1 << position
        else:
            for char in token:
                position += 1
                literal_bits[char] = literal_bits.get(char, 0) | 1 << position
    accept = 1 << position
    stars = star | star_star
    stay_on_slash, stay = star_star, stars

    def closed(state: int) -> int:
        return state | (state << 1) & stars

    start = closed(1)

    def matches(name: str) -> bool:
        state = start
        for char in name:
            advance = literal_bits.get(char, 0)
            if char == "/":
                state = (state << 1) & advance | state & stay_on_slash
            else:
                state = (state << 1) & (advance | any_but_slash) | state & stay
            if not state:
                return False
            state = closed(state)
        return bool(state & accept)

    return matches


def glob_matches(pattern: str, name: str) -> bool:
    """Whether ``name`` matches the glob: ``*`` and ``?`` stop at ``/``, ``**`` does not."""
    return glob_matcher(pattern)(name)


def _sqlite_glob(pattern: str | None, name: str | None) -> bool | None:
    if pattern is None or name is None:
        return None
    return glob_matches(pattern, name)


def _name_matches(session: Session, pattern: str) -> ColumnElement[bool]:
    """The exact glob test as SQL, for the session's database (see the comment above)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        # Registered on each search's connection (cheap): pooled connections come and go.
        raw = connection.connection.driver_connection
        raw.create_function(SQLITE_GLOB_FUNCTION, 2, _sqlite_glob, deterministic=True)
        return getattr(func, SQLITE_GLOB_FUNCTION)(literal(pattern), File.name) == 1
    return File.name.regexp_match(glob_to_regex(pattern))


def encode_cursor(row_id: int, kind: str = "f") -> str:
    """An opaque keyset cursor: the last id of a page, tagged with what it pages (``f``:
    files, ``c``: corrupt-copy records), so one list's cursor is refused by another."""
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str = "f") -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text.removeprefix(f"{kind}:")
        if digits == text or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            raise ValueError(text)
        file_id = int(digits)
        if not 0 <= file_id <= MAX_ID:
            raise ValueError(text)
        return file_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(f"invalid cursor {cursor!r}") from None


def search_files(session: Session, query: FileQuery) -> tuple[Sequence[File], str | None]:
    """One page of matching files in catalogue order, and the cursor of the next page.

    The query's limit and times were checked when it was built (``wire.files.FileQuery``).
    A name glob is a LIKE prefilter and an exact test, both in SQL (see ``glob_to_like``).
    """
    statement = select(File).order_by(File.id).limit(query.limit + 1)
    if query.name:
        statement = statement.where(
            File.name.like(glob_to_like(query.name), escape="\\"),
            _name_matches(session, query.name),
        )
    if query.uploader:
        statement = statement.where(File.uploader == query.uploader)
    if query.source:
        statement = statement.where(File.source == query.source)
    if query.created_since:
        statement = statement.where(File.created_at >= query.created_since)
    if query.created_until:
        statement = statement.where(File.created_at < query.created_until)
    if query.cursor:
        statement = statement.where(File.id > decode_cursor(query.cursor))
    rows = session.scalars(statement).all()
    if len(rows) > query.limit:
        return rows[: query.limit], encode_cursor(rows[query.limit - 1].id)
    return rows, None


def get_file(session: Session, name: str) -> File:
    """A file with its instances (and their stores) and remote instances (and peers).

    The name is looked up in NFC, the form every name is catalogued in.
    """
    name = normalise_name(name)
    file = session.scalar(
        select(File)
        .where(File.name == name)
        .options(
            selectinload(File.instances).selectinload(Instance.store),
            selectinload(File.remote_instances).selectinload(RemoteInstance.librarian),
        )
    )
    if file is None:
        raise NotFound(f"no file named {name!r}")
    return file
