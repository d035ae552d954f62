"""``/api/v2/files``: search the catalogue and locate a file's copies (read_only)."""

from __future__ import annotations

from datetime import datetime

from litestar import Router, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from librarian_dagster.api.auth import requires
from librarian_dagster.api.schemas import (
    API_PREFIX,
    FileInfo,
    FileSearchResult,
    FileSummary,
    InstanceInfo,
    RemoteInstanceInfo,
)
from librarian_dagster.catalogue.models import File, UserLevel
from librarian_dagster.services import files


def summary(file: File) -> FileSummary:
    return FileSummary(
        name=file.name,
        size=file.size,
        checksum=file.checksum,
        is_directory=file.is_directory,
        uploader=file.uploader,
        source=file.source,
        created_at=file.created_at,
    )


@get("/files", operation_id="searchFiles", sync_to_thread=True)
def search_files(
    state: State,
    name: FromQuery[str | None] = None,
    uploader: FromQuery[str | None] = None,
    source: FromQuery[str | None] = None,
    created_since: FromQuery[datetime | None] = None,
    created_until: FromQuery[datetime | None] = None,
    limit: FromQuery[int] = 100,
    cursor: FromQuery[str | None] = None,
) -> FileSearchResult:
    query = files.FileQuery(
        name=name,
        uploader=uploader,
        source=source,
        created_since=created_since,
        created_until=created_until,
        limit=limit,
        cursor=cursor,
    )
    with state.catalogue.session() as session:
        rows, next_cursor = files.search_files(session, query)
        return FileSearchResult(files=[summary(row) for row in rows], next_cursor=next_cursor)


@get("/files/{name:path}", operation_id="getFile", sync_to_thread=True)
def get_file(state: State, name: FromPath[str]) -> FileInfo:
    with state.catalogue.session() as session:
        file = files.get_file(session, name.lstrip("/"))
        return FileInfo(
            **summary(file).model_dump(),
            instances=[
                InstanceInfo(
                    store=instance.store.name,
                    path=instance.path,
                    available=instance.available,
                    created_at=instance.created_at,
                    verified_at=instance.verified_at,
                )
                for instance in file.instances
            ],
            remote_instances=[
                RemoteInstanceInfo(
                    librarian=remote.librarian.name,
                    store=remote.store_name,
                    created_at=remote.created_at,
                    verified_at=remote.verified_at,
                )
                for remote in file.remote_instances
            ],
        )


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[search_files, get_file],
        guards=[requires(UserLevel.READ_ONLY)],
        tags=["files"],
    )
