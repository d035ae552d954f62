"""Hostile requests the API once answered with a 500 or a wrong 200 (the hardening commit).

Each test names the defect it guards (the numbers of the hardening review). Load and timing
cases (stalled bodies, login throttling, concurrent writers) are in ``test_api_load``.
"""

from __future__ import annotations

import base64
import io
import tarfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from litestar.testing import TestClient

from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.movers.receive import receive_tar
from librarian_dagster.storage.names import (
    InvalidNameError,
    normalise_name,
    validate_name,
    validate_new_name,
)
from tests.api_helpers import api_client, credentials
from tests.ingest_helpers import open_site

ADMIN = credentials(UserLevel.ADMIN)
WRITER = credentials(UserLevel.READ_APPEND)
READER = credentials(UserLevel.READ_ONLY)
TOO_BIG = 2**63  # one past the largest BIGINT
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


@dataclass
class Api:
    client: TestClient
    settings: LibrarianSettings

    def catalogue_file(self, name: str, tmp_path: Path) -> None:
        """Store a small file under ``name`` through the services (no Dagster)."""
        source = tmp_path / name.replace("/", "_")
        source.write_bytes(b"twelve bytes")
        site = open_site(self.settings)
        outcome = site.ingest(site.upload(name, source, str(hash_path(source))))
        assert outcome.status == "stored", outcome.reason


@pytest.fixture
def api(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Iterator[Api]:
    settings = make_settings(database_url=database_url)
    with api_client(settings) as client:
        yield Api(client, settings)


@pytest.fixture
def plain_api(make_settings: Callable[..., LibrarianSettings]) -> Iterator[Api]:
    """SQLite only: for requests that are answered before the catalogue is read."""
    settings = make_settings()
    with api_client(settings) as client:
        yield Api(client, settings)


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


def stage(client: TestClient, name: str, size: int = 1, auth=WRITER):
    return client.post("/api/v2/uploads", json={"name": name, "size": size}, auth=auth)


# 1. OPTIONS and HEAD without credentials


@pytest.mark.parametrize(
    "path", ["/api/v2/users", "/api/v2/uploads", "/api/v2/uploads/1", "/api/v2/files"]
)
def test_options_on_guarded_routes_is_204_with_allow(plain_api: Api, path: str) -> None:
    """Defect 1: OPTIONS without credentials reached the guard with no user and answered 500."""
    response = plain_api.client.options(path)
    assert response.status_code == 204, response.text
    assert "OPTIONS" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v2/users", {"GET", "POST"}),
        ("/api/v2/users/someone", {"PATCH", "DELETE"}),
        ("/api/v2/uploads/1", {"GET", "DELETE"}),
    ],
)
def test_options_allow_lists_every_method_of_the_path(
    plain_api: Api, path: str, methods: set[str]
) -> None:
    """Defect 1: the 204 to OPTIONS names every method the path takes (RFC 9110 Allow)."""
    response = plain_api.client.options(path)
    assert response.status_code == 204, response.text
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert methods | {"OPTIONS"} <= allowed


# 2. Integers beyond 64 bits, zero and negative ids, forged cursors


@pytest.mark.parametrize("upload_id", [str(TOO_BIG), "0", "-1", str(2**70)])
@pytest.mark.parametrize(
    ("method", "suffix", "kwargs"),
    [
        ("GET", "", {}),
        ("DELETE", "", {}),
        ("PUT", "/content", {"content": b"x"}),
        ("POST", "/commit", {"json": {}}),
    ],
)
def test_out_of_range_upload_ids_are_client_errors(
    api: Api, upload_id: str, method: str, suffix: str, kwargs: dict
) -> None:
    """Defect 2: an id past 2^63-1 overflowed the database integer (500)."""
    response = api.client.request(
        method, f"/api/v2/uploads/{upload_id}{suffix}", auth=WRITER, **kwargs
    )
    assert response.status_code in (400, 404), response.text


@pytest.mark.parametrize("ids", [[TOO_BIG], [1, TOO_BIG], [0], [-1]])
def test_out_of_range_ids_in_status_query_are_400(api: Api, ids: list[int]) -> None:
    """Defect 2: ``upload_ids`` past 2^63-1 in POST /uploads/status answered 500."""
    stage(api.client, "status-target")
    response = api.client.post("/api/v2/uploads/status", json={"upload_ids": ids}, auth=WRITER)
    problem(response, 400)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor(f"f:{2**64}"),
        _cursor(f"f:{TOO_BIG}"),
        _cursor("f:-1"),
        _cursor("f:\uff11\uff12"),  # fullwidth digits: int() accepts them
        _cursor("f: 12"),
        _cursor("g:12"),
        "!!!not-base64!!!",
        _cursor("f:" + "9" * 60),
    ],
)
def test_forged_cursors_are_400(api: Api, cursor: str) -> None:
    """Defect 2: a cursor is opaque; a forged one must not overflow (500) or be trusted."""
    response = api.client.get("/api/v2/files", params={"cursor": cursor}, auth=READER)
    problem(response, 400)


# 3. Zoned times at the edges of the calendar


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("created_since", "0001-01-01T00:00:00+14:00"),
        ("created_until", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_times_without_a_utc_equivalent_are_400(api: Api, key: str, value: str) -> None:
    """Defect 3: converting these to UTC overflows the calendar (500)."""
    problem(api.client.get("/api/v2/files", params={key: value}, auth=READER), 400)


def test_zoned_times_filter_as_instants(api: Api, tmp_path: Path) -> None:
    """Defect 3: a time in +14:00 or -14:00 compares as the same instant in UTC."""
    api.catalogue_file("zoned/book", tmp_path)
    now = datetime.now(UTC)
    east, west = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))

    def names(**params: datetime) -> list[str]:
        query = {key: moment.isoformat() for key, moment in params.items()}
        response = api.client.get("/api/v2/files", params=query, auth=READER)
        assert response.status_code == 200, response.text
        return [file["name"] for file in response.json()["files"]]

    hour = timedelta(hours=1)
    assert names(created_since=(now - hour).astimezone(east)) == ["zoned/book"]
    assert names(created_until=(now + hour).astimezone(west)) == ["zoned/book"]
    assert names(created_since=(now + hour).astimezone(east)) == []
    assert names(created_until=(now - hour).astimezone(west)) == []


# 4. Deeply nested JSON


def test_deeply_nested_json_is_400(api: Api) -> None:
    """Defect 4: 100,000 ``[`` raised RecursionError in the decoder (500)."""
    response = api.client.post(
        "/api/v2/uploads",
        content=b"[" * 100_000,
        headers={"content-type": "application/json"},
        auth=WRITER,
    )
    problem(response, 400)
    assert stage(api.client, "after-deep-json").status_code == 201


# 5. Name globs


@pytest.mark.parametrize(
    "glob", ["x" * 1025, "*" * 33, "a?" * 17 + "*" * 16, "x" * 60_000], ids=len
)
def test_oversized_or_wildcard_heavy_globs_are_400(api: Api, glob: str) -> None:
    """Defect 5: long globs with many wildcards cost the database (and >50,000 chars was 500)."""
    problem(api.client.get("/api/v2/files", params={"name": glob}, auth=READER), 400)


def test_globs_at_the_limits_still_work(api: Api, tmp_path: Path) -> None:
    """Defect 5: 1024 characters with 32 wildcards is still a valid search."""
    api.catalogue_file("globbed/book", tmp_path)
    at_limit = "*" * 32 + "x" * 992
    matching = "globbed/*" + "*" * 31
    for glob, expected in ((at_limit, []), (matching, ["globbed/book"])):
        response = api.client.get("/api/v2/files", params={"name": glob}, auth=READER)
        assert response.status_code == 200, response.text
        assert [file["name"] for file in response.json()["files"]] == expected


# 6. Levels are read fresh; an admin does not lock themselves out by accident


def test_demotion_counts_from_the_next_request(api: Api) -> None:
    """Defect 6: the credential cache kept a demoted admin's level for up to 60 s."""
    client, bob = api.client, ("bob", "bob-password")
    body = {"name": "bob", "password": bob[1], "level": "admin"}
    assert client.post("/api/v2/users", json=body, auth=ADMIN).status_code == 201
    assert client.get("/api/v2/users", auth=bob).status_code == 200  # now cached
    demoted = client.patch("/api/v2/users/bob", json={"level": "read_only"}, auth=ADMIN)
    assert demoted.status_code == 200, demoted.text
    problem(client.get("/api/v2/users", auth=bob), 403)
    assert client.get("/api/v2/files", auth=bob).status_code == 200  # still a reader


def test_promotion_counts_from_the_next_request(api: Api) -> None:
    """Defect 6: likewise a promoted user waited for the cache to expire."""
    client, dave = api.client, ("dave", "dave-password")
    body = {"name": "dave", "password": dave[1], "level": "read_only"}
    assert client.post("/api/v2/users", json=body, auth=ADMIN).status_code == 201
    problem(client.get("/api/v2/users", auth=dave), 403)  # now cached
    promoted = client.patch("/api/v2/users/dave", json={"level": "admin"}, auth=ADMIN)
    assert promoted.status_code == 200, promoted.text
    assert client.get("/api/v2/users", auth=dave).status_code == 200


def test_self_demotion_and_self_deletion_need_force(api: Api) -> None:
    """Defect 6: one request by an admin could remove their own admin rights or account."""
    client, carol = api.client, ("carol", "carol-password")
    body = {"name": "carol", "password": carol[1], "level": "admin"}
    assert client.post("/api/v2/users", json=body, auth=ADMIN).status_code == 201
    problem(client.patch("/api/v2/users/carol", json={"level": "read_only"}, auth=carol), 409)
    problem(client.delete("/api/v2/users/carol", auth=carol), 409)
    assert client.get("/api/v2/users", auth=carol).status_code == 200  # still an admin
    forced = client.patch(
        "/api/v2/users/carol?force=true", json={"level": "read_append"}, auth=carol
    )
    assert forced.status_code == 200 and forced.json()["level"] == "read_append"
    problem(client.get("/api/v2/users", auth=carol), 403)
    client.patch("/api/v2/users/carol", json={"level": "admin"}, auth=ADMIN)
    assert client.delete("/api/v2/users/carol?force=true", auth=carol).status_code == 204
    problem(client.get("/api/v2/users", auth=carol), 401)
    # The last admin stays, force or not.
    admin = ADMIN[0]
    problem(client.delete(f"/api/v2/users/{admin}?force=true", auth=ADMIN), 409)
    demote = {"level": "read_only"}
    problem(client.patch(f"/api/v2/users/{admin}?force=true", json=demote, auth=ADMIN), 409)
    assert client.get("/api/v2/users", auth=ADMIN).status_code == 200


# 15. JSON routes need Content-Type: application/json


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_json_without_a_json_content_type_is_415(api: Api, content_type: str | None) -> None:
    """Defect 15: a cross-site form (text/plain) could stage uploads or create users."""
    client = api.client
    headers = {"content-type": content_type} if content_type else {}
    users_before = client.get("/api/v2/users", auth=ADMIN).json()
    upload = b'{"name": "csrf/book", "size": 1}'
    user = b'{"name": "mallory", "password": "mallory-password", "level": "admin"}'
    status = b'{"upload_ids": [1]}'
    for path, body, auth in (
        ("/api/v2/uploads", upload, WRITER),
        ("/api/v2/users", user, ADMIN),
        ("/api/v2/uploads/status", status, WRITER),
    ):
        response = client.post(path, content=body, headers=headers, auth=auth)
        problem(response, 415)
    assert client.get("/api/v2/users", auth=ADMIN).json() == users_before
    assert stage(client, "csrf/book").status_code == 201  # new: nothing had been staged


# 18. Names: one Unicode form, no invisible or look-alike characters


def test_nfc_and_nfd_names_are_one_upload(api: Api) -> None:
    """Defect 18: "café" typed in NFD and in NFC became two books."""
    first = stage(api.client, NFC)
    assert first.status_code == 201, first.text
    again = stage(api.client, NFD)
    assert again.status_code == 200, again.text
    assert again.json()["upload_id"] == first.json()["upload_id"] and again.json()["name"] == NFC


def test_nfd_name_finds_the_nfc_book(api: Api, tmp_path: Path) -> None:
    """Defect 18: GET /files/<NFD name> did not find the book catalogued in NFC."""
    api.catalogue_file(f"{NFC}/notes", tmp_path)
    response = api.client.get(f"/api/v2/files/{NFD}/notes", auth=READER)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == f"{NFC}/notes"
    problem(stage(api.client, f"{NFD}/notes"), 409)  # catalogued: names are immutable


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2215", "\uff0e", "\uff0f"])
def test_invisible_and_lookalike_characters_are_refused(api: Api, char: str) -> None:
    """Defect 18: RLO, zero-width space and look-alike slashes or dots made deceptive names."""
    body = problem(stage(api.client, f"2026{char}11/book"), 400)
    assert f"U+{ord(char):04X}" in body["detail"]
    assert stage(api.client, "2026/11/book").status_code == 201  # nothing else was staged


@pytest.mark.parametrize(
    "char",
    [
        *("\u202e", "\u200b", "\u2215", "\uff0e", "\uff0f", "\u00ad", "\u2028", "\u2044"),
        *("\u00a0", "\ufe0f", "\u3164", "\u034f", "\u2026"),
    ],
)
def test_validate_new_name_names_the_refused_character(char: str) -> None:
    """Defect 18 (unit): the reason names the code point; catalogued names stay readable."""
    with pytest.raises(InvalidNameError, match=f"U\\+{ord(char):04X}"):
        validate_new_name(f"a{char}b")
    assert validate_name(f"a{char}b") == f"a{char}b"  # an old name, or a path in a book


def test_validate_new_name_requires_nfc_and_normalise_name_gives_it() -> None:
    """Defect 18 (unit): entry points normalise; validate_new_name refuses what is not NFC."""
    assert normalise_name(NFD) == NFC and normalise_name(NFC) == NFC
    assert validate_new_name(normalise_name(f"{NFD}/x")) == f"{NFC}/x"
    with pytest.raises(InvalidNameError, match="NFC"):
        validate_new_name(NFD)
    assert validate_name(NFD) == NFD  # storage still resolves a name catalogued before
    assert validate_new_name("日本/データ") == "日本/データ"


def test_tar_member_keeps_its_nfd_name(tmp_path: Path) -> None:
    """Defect 18: inside a directory book, a member's name is kept byte for byte (NFD too)."""
    data = b"accented"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo(f"{NFD}.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    buffer.seek(0)
    received = receive_tar(buffer, tmp_path / "book", "blake3", len(data))
    assert received.size == len(data)
    assert [p.name for p in (tmp_path / "book").iterdir()] == [f"{NFD}.txt"]


# 19. Exact JSON types


@pytest.mark.parametrize("size", ["1", True, 1.0, "1e3", None])
def test_sizes_must_be_json_integers(api: Api, size: object) -> None:
    """Defect 19: ``"1"``, ``true`` and ``1.0`` were coerced into a size and staged."""
    response = api.client.post(
        "/api/v2/uploads", json={"name": "typed/book", "size": size}, auth=WRITER
    )
    problem(response, 400)
    assert stage(api.client, "typed/book").status_code == 201  # new: nothing had been staged


def test_upload_ids_must_be_json_integers(api: Api) -> None:
    """Defect 19: ``[false]`` was read as id 0 and ``["1"]`` as id 1."""
    upload_id = stage(api.client, "typed/status").json()["upload_id"]
    for ids in ([False], [str(upload_id)], [True], [float(upload_id)]):
        response = api.client.post("/api/v2/uploads/status", json={"upload_ids": ids}, auth=WRITER)
        problem(response, 400)
    ok = api.client.post("/api/v2/uploads/status", json={"upload_ids": [upload_id]}, auth=WRITER)
    assert ok.status_code == 200, ok.text
