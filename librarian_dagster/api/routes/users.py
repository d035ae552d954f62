"""``/api/v2/users``: accounts, admin only. Thin: validation and work live in services."""

from __future__ import annotations

from litestar import Request, Router, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep, SettingsDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.catalogue.models import User
from librarian_dagster.services import accounts
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import API_PREFIX, UserCreate, UserInfo, UserList, UserUpdate


def _info(user: User) -> UserInfo:
    return UserInfo(
        name=user.name,
        level=user.level,
        created_at=user.created_at,
        password_changed_at=user.password_changed_at,
    )


@get("/users", operation_id="listUsers", sync_to_thread=True)
def list_users(catalogue: CatalogueDep) -> UserList:
    with catalogue.session() as session:
        return UserList(users=[_info(user) for user in accounts.list_users(session)])


@post(
    "/users",
    operation_id="createUser",
    sync_to_thread=True,
    status_code=HTTP_201_CREATED,
    responses=problems(409),
)
def create_user(
    settings: SettingsDep, catalogue: CatalogueDep, data: JSONBody[UserCreate]
) -> UserInfo:
    hasher = accounts.password_hasher(settings.security)
    with catalogue.session() as session:
        user = accounts.create_user(session, hasher, data.name, data.password, data.level)
        return _info(user)


@patch(
    "/users/{name:str}",
    operation_id="updateUser",
    sync_to_thread=True,
    responses=problems(404, 409),
)
def update_user(
    request: Request,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    name: FromPath[str],
    data: JSONBody[UserUpdate],
    force: FromQuery[bool] = False,
) -> UserInfo:
    """Change a password or a level; demoting yourself needs ``force=true``."""
    if data.level is not None and data.level != UserLevel.ADMIN:
        accounts.refuse_self_lockout(request.user.name, name, "demote", force=force)
    with catalogue.session() as session:
        user = accounts.get_user(session, name)
        if data.password is not None:
            user = accounts.set_password(
                session, accounts.password_hasher(settings.security), name, data.password
            )
        if data.level is not None:
            user = accounts.set_level(session, name, data.level)
        return _info(user)


@delete(
    "/users/{name:str}",
    operation_id="deleteUser",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(404, 409),
)
def delete_user(
    request: Request, catalogue: CatalogueDep, name: FromPath[str], force: FromQuery[bool] = False
) -> None:
    """Delete an account; deleting your own needs ``force=true``."""
    accounts.refuse_self_lockout(request.user.name, name, "delete", force=force)
    with catalogue.session() as session:
        accounts.delete_user(session, name)


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_users, create_user, update_user, delete_user],
        guards=[requires(UserLevel.ADMIN)],
        tags=["users"],
    )
