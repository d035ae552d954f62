"""``POST /api/v2/files/{name}/validate``: re-read our copies of a book now (callback level).

A peer asks before it deletes its own copy (a rolling store) or to show an operator where
good copies are (``librarian validate``); an operator may ask too. Callers at the
``callback`` level must be peers of ours (an account named after a peer); higher levels may
always ask. Bad copies found are recorded as an integrity pass records them.

The book's name is a path, so the route is ``POST /files/{name:path}`` with the name ending
in ``/validate`` (a book whose own name ends in ``/validate`` is ``.../validate/validate``);
it is registered in the files router (``routes.files.router``), which owns that path.
"""

from __future__ import annotations

from litestar import Request, post
from litestar.params import FromPath

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep, SettingsDep, StoresDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.services.errors import NotFound
from librarian_dagster.services.integrity_validate import validate_here
from librarian_dagster.services.peers import require_calling_peer
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import API_PREFIX
from librarian_dagster.wire.integrity import VALIDATE_SUFFIX, FileValidation


@post(
    "/files/{name:path}",
    operation_id="validateFile",
    sync_to_thread=True,
    status_code=200,
    responses=problems(404),
    summary="Re-verify our copies of a file now (the path ends in /validate)",
    guards=[requires(UserLevel.CALLBACK)],
    tags=["integrity"],
)
def validate_file(
    request: Request,
    catalogue: CatalogueDep,
    stores: StoresDep,
    settings: SettingsDep,
    name: FromPath[str],
) -> FileValidation:
    if not name.endswith(VALIDATE_SUFFIX) or name == VALIDATE_SUFFIX:
        raise NotFound(f"POST {API_PREFIX}/files/NAME{VALIDATE_SUFFIX} validates a file")
    if request.user.level == UserLevel.CALLBACK:
        with catalogue.session() as session:
            require_calling_peer(session, request.user)
    return validate_here(catalogue, stores, settings, name[: -len(VALIDATE_SUFFIX)].lstrip("/"))
