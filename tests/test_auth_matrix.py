"""Every route x every level x (no auth, bad password, good password).

The expected level of each route is written here by hand; the test fails if the app has a
route this table does not list, so a new route cannot land without its permission decided.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from librarian_dagster.api.app import create_app
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from tests.api_helpers import api_client, credentials

PUBLIC = None
# The clone routes need the caller to be a peer (an account named after a peer of ours):
# none of this table's accounts is one, so they all get 403 (and admins where they may act
# on any transfer pass). tests/test_clones_auth.py covers peers themselves.
PEER_ONLY = "peer"
PEER_OR_ADMIN = "peer or admin"
Required = UserLevel | str | None
EXPECTED: dict[tuple[str, str], Required] = {
    ("GET", "/api/v2/ping"): PUBLIC,
    ("GET", "/api/v2/users"): UserLevel.ADMIN,
    ("POST", "/api/v2/users"): UserLevel.ADMIN,
    ("PATCH", "/api/v2/users/{name:str}"): UserLevel.ADMIN,
    ("DELETE", "/api/v2/users/{name:str}"): UserLevel.ADMIN,
    ("POST", "/api/v2/uploads"): UserLevel.READ_APPEND,
    ("PUT", "/api/v2/uploads/{upload_id:int}/content"): UserLevel.READ_APPEND,
    ("POST", "/api/v2/uploads/{upload_id:int}/commit"): UserLevel.READ_APPEND,
    ("GET", "/api/v2/uploads/{upload_id:int}"): UserLevel.READ_APPEND,
    ("DELETE", "/api/v2/uploads/{upload_id:int}"): UserLevel.READ_APPEND,
    ("POST", "/api/v2/uploads/status"): UserLevel.READ_APPEND,
    ("GET", "/api/v2/files"): UserLevel.READ_ONLY,
    ("GET", "/api/v2/files/{name:path}"): UserLevel.READ_ONLY,
    ("POST", "/api/v2/files/{name:path}"): UserLevel.CALLBACK,
    ("GET", "/api/v2/corrupt"): UserLevel.ADMIN,
    ("POST", "/api/v2/corrupt/{record_id:int}/dismiss"): UserLevel.ADMIN,
    ("GET", "/api/v2/events"): UserLevel.ADMIN,
    ("POST", "/api/v2/events/resolve"): UserLevel.ADMIN,
    ("GET", "/api/v2/account"): UserLevel.CALLBACK,
    ("GET", "/api/v2/stores"): UserLevel.ADMIN,
    ("PATCH", "/api/v2/stores/{name:str}"): UserLevel.ADMIN,
    ("GET", "/api/v2/peers"): UserLevel.ADMIN,
    ("POST", "/api/v2/peers"): UserLevel.ADMIN,
    ("GET", "/api/v2/peers/{name:str}"): UserLevel.ADMIN,
    ("PATCH", "/api/v2/peers/{name:str}"): UserLevel.ADMIN,
    ("DELETE", "/api/v2/peers/{name:str}"): UserLevel.ADMIN,
    ("POST", "/api/v2/peers/{name:str}/check"): UserLevel.ADMIN,
    ("GET", "/api/v2/transfers"): UserLevel.ADMIN,
    ("POST", "/api/v2/transfers/{transfer_id:int}/retry"): UserLevel.ADMIN,
    ("POST", "/api/v2/transfers/{transfer_id:int}/cancel"): UserLevel.ADMIN,
    ("POST", "/api/v2/clones/stage"): PEER_ONLY,
    ("POST", "/api/v2/clones/status"): PEER_ONLY,
    ("POST", "/api/v2/clones/resend"): PEER_ONLY,
    ("POST", "/api/v2/clones/staged"): PEER_OR_ADMIN,
    ("POST", "/api/v2/clones/complete"): PEER_OR_ADMIN,
    ("POST", "/api/v2/clones/fail"): PEER_OR_ADMIN,
    ("POST", "/api/v2/sneaker/ingest"): UserLevel.READ_APPEND,
    ("GET", "/api/v2/sneaker/ingest/{drive_uuid:str}"): UserLevel.READ_APPEND,
    ("POST", "/api/v2/sneaker/complete"): PEER_ONLY,
}
SAMPLE_PATH_VALUES = {
    "name": "no-such-name",
    "upload_id": "999999",
    "record_id": "999999",
    "transfer_id": "999999",
    "drive_uuid": "00000000-0000-4000-8000-000000000000",
}


def app_routes(settings: LibrarianSettings) -> set[tuple[str, str]]:
    app = create_app(settings)
    found = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        for method in route.methods:
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, route.path))
    return found


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from librarian_dagster.settings import load_settings
    from tests.conftest import FAST_ARGON2, write_config

    directory = tmp_path_factory.mktemp("matrix")
    body = "\n".join(
        [
            'name = "matrix"',
            f'database_url = "sqlite:///{directory / "c.sqlite"}"',
            # Every route is tried with a wrong password: no throttling of those here
            # (test_api_load covers it).
            "[api]",
            "login_failures_before_delay = 1000000",
            "[security]",
            *(f"{k} = {v}" for k, v in FAST_ARGON2.items()),
            "[[stores]]",
            'name = "main"',
            'root = "stores/main"',
            "reserve_bytes = 0",
        ]
    )
    with api_client(load_settings(write_config(directory, body + "\n"))) as client:
        yield client


def test_table_covers_every_route(make_settings: Callable[..., LibrarianSettings]) -> None:
    assert app_routes(make_settings()) == set(EXPECTED)


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], path)


CASES = [
    (method, path, level, auth)
    for (method, path) in EXPECTED
    for level in UserLevel
    for auth in ("none", "bad", "good")
]


@pytest.mark.parametrize(("method", "path", "level", "auth"), CASES)
def test_route_permission(
    client: TestClient, method: str, path: str, level: UserLevel, auth: str
) -> None:
    required = EXPECTED[(method, path)]
    name, password = credentials(level)
    kwargs: dict = {}
    if auth == "good":
        kwargs["auth"] = (name, password)
    elif auth == "bad":
        kwargs["auth"] = (name, password + "-wrong")
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    response = client.request(method, _concrete(path), **kwargs)
    if required is PUBLIC:
        assert response.status_code not in (401, 403), response.text
    elif auth != "good":
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Basic")
    elif isinstance(required, str) and not isinstance(required, UserLevel):
        allowed = required == PEER_OR_ADMIN and level == UserLevel.ADMIN
        assert (response.status_code not in (401, 403)) == allowed, response.text
    elif level.allows(required):
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
