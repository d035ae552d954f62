"""The API skeleton: ping, users, problem details, limits, OpenAPI."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator

import pytest
from litestar.exceptions import InternalServerException
from litestar.testing import TestClient

from librarian_dagster.api.routes import ping as ping_routes
from librarian_dagster.api.routes.files import file_query
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.wire import FileQuery
from tests.api_helpers import PASSWORD, api_client, credentials

ADMIN = credentials(UserLevel.ADMIN)


@pytest.fixture
def client(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> Iterator[TestClient]:
    with api_client(make_settings(database_url=database_url)) as client:
        yield client


def assert_problem(response, status: int, detail_contains: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"]
    assert detail_contains in (body.get("detail") or "")
    return body


def test_ping_is_public_and_reports_health(client: TestClient) -> None:
    response = client.get("/api/v2/ping")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "test-site" and body["healthy"] is True
    assert body["catalogue"]["ok"] is True and body["catalogue"]["revision"]
    (store,) = body["stores"]
    assert store["name"] == "main" and store["ok"] is True and store["free_bytes"] > 0
    assert store["leftover_staging"] == 0


def test_refusals_are_not_logged_as_errors_but_crashes_are(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    assert client.get("/api/v2/users", auth=("admin", "wrong")).status_code == 401
    assert client.get("/api/v2/users/nobody-here", auth=ADMIN).status_code in (404, 405)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

    def broken(_catalogue: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ping_routes, "catalogue_health", broken)
    assert_problem(client.get("/api/v2/ping"), 500)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "unhandled error on GET /api/v2/ping" in record.getMessage()
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])


def test_litestar_internal_errors_are_logged_and_not_shown(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_catalogue: object) -> None:
        raise InternalServerException("internal secret detail")

    monkeypatch.setattr(ping_routes, "catalogue_health", broken)
    body = assert_problem(client.get("/api/v2/ping"), 500)
    assert "secret" not in body["detail"]
    assert any(
        r.levelno >= logging.ERROR and "internal secret detail" in r.getMessage()
        for r in caplog.records
    )


def test_openapi_schema_is_public(client: TestClient) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v2/ping" in paths and "/api/v2/users" in paths


def test_the_search_route_takes_exactly_the_file_query_fields(client: TestClient) -> None:
    """One definition of the search filters (``wire.files.FileQuery``): the route's query
    string, its OpenAPI description and the client's request all follow it."""
    operation = client.get("/schema/openapi.json").json()["paths"]["/api/v2/files"]["get"]
    documented = [p["name"] for p in operation["parameters"] if p["in"] == "query"]
    assert sorted(documented) == sorted(FileQuery.model_fields)
    assert list(inspect.signature(file_query).parameters) == list(FileQuery.model_fields)
    auth = credentials(UserLevel.READ_ONLY)
    refused = client.get("/api/v2/files", params={"limit": 5000}, auth=auth)
    assert refused.status_code == 400 and "limit must be between 1 and 1000" in refused.text
    naive = client.get("/api/v2/files", params={"created_since": "2026-01-01T00:00"}, auth=auth)
    assert naive.status_code == 400 and "created_since" in naive.text


def test_user_lifecycle(client: TestClient) -> None:
    created = client.post(
        "/api/v2/users",
        json={"name": "alice", "password": "password1", "level": "read_append"},
        auth=ADMIN,
    )
    assert created.status_code == 201
    assert created.json()["level"] == "read_append" and "password" not in created.json()
    listing = client.get("/api/v2/users", auth=ADMIN).json()["users"]
    assert "alice" in [u["name"] for u in listing]
    assert client.get("/api/v2/users", auth=("alice", "password1")).status_code == 403
    changed = client.patch("/api/v2/users/alice", json={"password": "password2"}, auth=ADMIN)
    assert changed.status_code == 200
    # The old password is refused (401), not merely under-privileged (403).
    assert_problem(client.get("/api/v2/users", auth=("alice", "password1")), 401)
    assert client.delete("/api/v2/users/alice", auth=ADMIN).status_code == 204
    assert_problem(client.delete("/api/v2/users/alice", auth=ADMIN), 404, "alice")


def test_password_change_invalidates_cached_login(client: TestClient) -> None:
    alice = ("alice", "password1")
    client.post(
        "/api/v2/users",
        json={"name": "alice", "password": "password1", "level": "admin"},
        auth=ADMIN,
    )
    assert client.get("/api/v2/users", auth=alice).status_code == 200  # now cached
    client.patch("/api/v2/users/alice", json={"password": "password2"}, auth=ADMIN)
    assert_problem(client.get("/api/v2/users", auth=alice), 401)
    assert client.get("/api/v2/users", auth=("alice", "password2")).status_code == 200
    client.delete("/api/v2/users/alice", auth=ADMIN)
    assert_problem(client.get("/api/v2/users", auth=("alice", "password2")), 401)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"name": "bob", "password": "password1", "level": "root"}, 400, ""),
        ({"name": "bob", "password": "password1", "extra": 1}, 400, ""),
        ({"name": "../bob", "password": "password1"}, 400, ""),
        ({"name": "bob", "password": "short"}, 400, ""),
        ({"name": "user-admin", "password": "password1"}, 409, "already exists"),
    ],
)
def test_bad_user_requests_change_nothing(
    client: TestClient, body: dict, status: int, detail: str
) -> None:
    before = client.get("/api/v2/users", auth=ADMIN).json()
    assert_problem(client.post("/api/v2/users", json=body, auth=ADMIN), status, detail)
    assert client.get("/api/v2/users", auth=ADMIN).json() == before


def test_validation_problem_names_the_field(client: TestClient) -> None:
    body = {"name": "bob", "password": "password1", "level": "root"}
    problem = assert_problem(client.post("/api/v2/users", json=body, auth=ADMIN), 400)
    assert any(error.get("key") == "level" for error in problem["errors"])


def test_malformed_json_is_a_problem(client: TestClient) -> None:
    response = client.post(
        "/api/v2/users",
        content=b"{not json",
        headers={"content-type": "application/json"},
        auth=ADMIN,
    )
    assert_problem(response, 400)


def test_oversized_body_is_refused(client: TestClient) -> None:
    huge = {"name": "bob", "password": "x" * (2 * 1024 * 1024)}
    assert_problem(client.post("/api/v2/users", json=huge, auth=ADMIN), 413)


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/v2/nothing-here", auth=ADMIN), 404)
    assert_problem(client.put("/api/v2/ping"), 405)


def test_unauthenticated_gets_www_authenticate(client: TestClient) -> None:
    response = client.get("/api/v2/users")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Basic")
    bad = client.get("/api/v2/users", headers={"authorization": "Basic !!!notbase64"})
    assert_problem(bad, 401)
    wrong = client.get("/api/v2/users", auth=("user-admin", PASSWORD + "x"))
    assert_problem(wrong, 401, "wrong user name or password")
