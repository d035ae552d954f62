"""A staging directory replaced by a symlink (possible on a shared filesystem): 409, not 500.

Nothing is read or removed through the link; cancelling removes the link itself and keeps
whatever it points to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from tests.api_helpers import api_client, credentials

AUTH = credentials(UserLevel.READ_APPEND)
MD5_ABC = "md5:900150983cd24fb0d6963f7d28e17f72"


@pytest.fixture
def client(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> Iterator[TestClient]:
    with api_client(make_settings(database_url=database_url)) as client:
        yield client


def tampered(client: TestClient, tmp_path: Path, name: str) -> tuple[int, Path, Path]:
    """An upload whose staging directory is now a symlink to a directory holding data."""
    info = client.post("/api/v2/uploads", json={"name": name, "size": 3}, auth=AUTH).json()
    data = Path(info["staging_path"])
    elsewhere = tmp_path / f"elsewhere-{name.replace('/', '-')}"
    elsewhere.mkdir()
    (elsewhere / data.name).write_bytes(b"abc")
    (elsewhere / "precious").write_bytes(b"not the librarian's")
    os.rmdir(data.parent)
    os.symlink(elsewhere, data.parent)
    return info["upload_id"], data.parent, elsewhere


def test_commit_through_a_symlinked_staging_is_409(client: TestClient, tmp_path: Path) -> None:
    upload_id, _link, elsewhere = tampered(client, tmp_path, "t/commit")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    response = client.post(
        f"/api/v2/uploads/{upload_id}/commit", json={"checksum": MD5_ABC}, auth=AUTH
    )
    assert response.status_code == 409 and "not a real directory" in response.json()["detail"]
    assert client.get(f"/api/v2/uploads/{upload_id}", auth=AUTH).json()["status"] == "initiated"
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_content_through_a_symlinked_staging_is_409_and_writes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    upload_id, _link, elsewhere = tampered(client, tmp_path, "t/put")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    response = client.put(
        f"/api/v2/uploads/{upload_id}/content",
        content=b"xyz",
        headers={"content-type": "application/octet-stream"},
        auth=AUTH,
    )
    assert response.status_code == 409
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_cancel_removes_the_link_and_keeps_its_target(client: TestClient, tmp_path: Path) -> None:
    upload_id, link, elsewhere = tampered(client, tmp_path, "t/cancel")
    response = client.delete(f"/api/v2/uploads/{upload_id}", auth=AUTH)
    assert response.status_code == 204
    assert not os.path.lexists(link)
    assert (elsewhere / "precious").read_bytes() == b"not the librarian's"
    assert client.get(f"/api/v2/uploads/{upload_id}", auth=AUTH).json()["status"] == "cancelled"
