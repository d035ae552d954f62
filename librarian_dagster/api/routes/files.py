"""``/api/v2/files``: search the catalogue and locate a file's copies (read_only)."""

from __future__ import annotations

from datetime import datetime

from litestar import Router, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from pydantic import ValidationError

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.api.routes.integrity import validate_file
from librarian_dagster.catalogue.models import File
from librarian_dagster.services import corrupt, files
from librarian_dagster.services.errors import InvalidRequest
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import (
    API_PREFIX,
    FileInfo,
    FileQuery,
    FileSearchResult,
    FileSummary,
    InstanceInfo,
    RemoteInstanceInfo,
    first_problem,
)


def file_query(
    name: FromQuery[str | None] = None,
    uploader: FromQuery[str | None] = None,
    source: FromQuery[str | None] = None,
    created_since: FromQuery[datetime | None] = None,
    created_until: FromQuery[datetime | None] = None,
    limit: FromQuery[int] = 100,
    cursor: FromQuery[str | None] = None,
) -> FileQuery:
    """``wire.files.FileQuery`` from the query string: one parameter per field (a test checks)."""
    try:
        return FileQuery(
            name=name,
            uploader=uploader,
            source=source,
            created_since=created_since,
            created_until=created_until,
            limit=limit,
            cursor=cursor,
        )
    except ValidationError as error:
        raise InvalidRequest(first_problem(error)) from None


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


@get(
    "/files",
    operation_id="searchFiles",
    sync_to_thread=True,
    dependencies={"filters": Provide(file_query, sync_to_thread=False)},
    guards=[requires(UserLevel.READ_ONLY)],
)
def search_files(catalogue: CatalogueDep, filters: NamedDependency[FileQuery]) -> FileSearchResult:
    with catalogue.session() as session:
        rows, next_cursor = files.search_files(session, filters)
        return FileSearchResult(files=[summary(row) for row in rows], next_cursor=next_cursor)


@get(
    "/files/{name:path}",
    operation_id="getFile",
    sync_to_thread=True,
    responses=problems(404),
    guards=[requires(UserLevel.READ_ONLY)],
)
def get_file(catalogue: CatalogueDep, name: FromPath[str]) -> FileInfo:
    with catalogue.session() as session:
        file = files.get_file(session, name.lstrip("/"))
        problems_by_instance = corrupt.open_problems(session, file.id)
        return FileInfo(
            **summary(file).model_dump(),
            instances=[
                InstanceInfo(
                    store=instance.store.name,
                    path=instance.path,
                    available=instance.available,
                    created_at=instance.created_at,
                    verified_at=instance.verified_at,
                    corrupt=problems_by_instance.get(instance.id),
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
    """Reading files (read_only), and validating one (callback: ``routes.integrity``), which
    shares the path ``/files/{name:path}`` and so must be in the same router (Litestar
    refuses one path's handlers spread over two); each handler carries its own level."""
    return Router(
        path=API_PREFIX,
        route_handlers=[search_files, get_file, validate_file],
        tags=["files"],
    )
