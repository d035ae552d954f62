"""Catalogue reads: is a name taken, search files (keyset-paged), locate one file's copies."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from librarian_dagster.catalogue.models import File, Instance, RemoteInstance
from librarian_dagster.services.errors import InvalidRequest, NotFound
from librarian_dagster.storage.names import normalise_name
from librarian_dagster.wire.common import MAX_ID
from librarian_dagster.wire.files import FileQuery


def is_catalogued(session: Session, name: str) -> bool:
    """Whether a file of this name exists (names are immutable: it is taken for good)."""
    return session.scalar(select(File.id).where(File.name == name)) is not None


def glob_to_like(pattern: str) -> str:
    """``2026/11/*`` → ``2026/11/%`` with LIKE's own wildcards escaped (escape char ``\\``)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def encode_cursor(file_id: int) -> str:
    return base64.urlsafe_b64encode(f"f:{file_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text.removeprefix("f:")
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
    """
    statement = select(File).order_by(File.id).limit(query.limit + 1)
    if query.name:
        statement = statement.where(File.name.like(glob_to_like(query.name), escape="\\"))
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
