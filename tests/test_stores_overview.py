"""``GET/PATCH /api/v2/stores`` and ``services.stores``: kind, drive state, books, space.

On SQLite and PostgreSQL: the listing counts the copies in service, a drive's used bytes
are its books' and its free bytes stay within ``capacity_bytes``; a drive that is away or
foreign is shown with the reason and no space; a drive with the store's identity that is
not the one its copies were written to is reported, not adopted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.catalogue.models import File, Instance, Store
from librarian_dagster.services.bootstrap import prepare, ready
from librarian_dagster.services.stores import store_overview, sync_stores
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.sneaker import (
    IDENTITY_FILE,
    DriveError,
    DriveIdentity,
    provision_drive,
    read_identity,
)
from tests.api_helpers import api_client, credentials

ADMIN = credentials(UserLevel.ADMIN)
CAPACITY = 10_000


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    root = tmp_path / "drive"
    root.mkdir()
    return root


@pytest.fixture
def settings(
    make_settings: Callable[..., LibrarianSettings], database_url: str, drive: Path
) -> LibrarianSettings:
    sneaker = (
        f'[[stores]]\nname = "drive1"\nkind = "sneaker"\nroot = "{drive}"\nrequire_mount = false\n'
        f"capacity_bytes = {CAPACITY}\nreserve_bytes = 0\n"
    )
    return make_settings(database_url=database_url, extra_toml=sneaker)


@pytest.fixture
def client(settings: LibrarianSettings) -> Iterator[TestClient]:
    with api_client(settings) as test_client:
        yield test_client


def record_copy(settings: LibrarianSettings, store: str, name: str, size: int) -> None:
    """A book with a copy on ``store``, as ingest or a fill would record it."""
    with get_catalogue(settings.catalogue_url).session() as session:
        store_id = session.scalar(select(Store.id).where(Store.name == store))
        file = File(name=name, size=size, checksum="xxh3_128:" + "0" * 32, uploader="t", source="t")
        session.add(file)
        session.flush()
        session.add(Instance(file_id=file.id, store_id=store_id, path=f"/x/{name}"))


def empty_drive_in_place_of_the_first(settings: LibrarianSettings, drive: Path) -> DriveIdentity:
    """Provision the first drive and record a copy on it, then put an empty drive in its
    slot (the first is away); the first drive's identity."""
    prepare(settings)
    first = read_identity(drive)
    assert first is not None
    record_copy(settings, "drive1", "on-the-first-drive", 10)
    shutil.rmtree(drive)
    drive.mkdir()
    return first


def recorded_drive(settings: LibrarianSettings) -> str | None:
    """The drive the catalogue says drive1 was given."""
    with get_catalogue(settings.catalogue_url).session() as session:
        row = session.scalar(select(Store).where(Store.name == "drive1"))
        assert row is not None
        return row.drive_uuid


def listing(client: TestClient) -> dict[str, dict[str, object]]:
    response = client.get("/api/v2/stores", auth=ADMIN)
    assert response.status_code == 200, response.text
    return {store["name"]: store for store in response.json()["stores"]}


def test_stores_show_kind_state_books_and_space(
    client: TestClient, settings: LibrarianSettings, drive: Path
) -> None:
    record_copy(settings, "main", "a", 5)
    record_copy(settings, "drive1", "b", 3_000)
    record_copy(settings, "drive1", "c", 1_000)
    stores = listing(client)

    main = stores["main"]
    assert (main["kind"], main["state"], main["books"], main["problem"]) == ("local", None, 1, None)
    assert main["ingestable"] is True and main["free_bytes"] > 0 and main["used_bytes"] > 0

    drive1 = stores["drive1"]
    identity = read_identity(drive)
    assert identity is not None
    assert (drive1["kind"], drive1["state"], drive1["drive_uuid"]) == (
        "sneaker",
        "filling",
        identity.drive_uuid,
    )
    assert (drive1["books"], drive1["used_bytes"], drive1["capacity_bytes"]) == (2, 4_000, CAPACITY)
    assert drive1["free_bytes"] == CAPACITY - 4_000  # the capacity, not the disk, limits it
    assert drive1["ingestable"] is False and drive1["problem"] is None


def test_a_drive_away_or_foreign_is_shown_with_the_reason(client: TestClient, drive: Path) -> None:
    away = drive.with_name("drive.shipped")
    drive.rename(away)
    drive1 = listing(client)["drive1"]
    assert drive1["problem"] == "no drive mounted"
    assert drive1["used_bytes"] is None and drive1["free_bytes"] is None

    drive.mkdir()
    provision_drive(drive, "elsewhere", "drive7", require_mount=False)
    drive1 = listing(client)["drive1"]
    assert "drive7" in str(drive1["problem"]) and drive1["free_bytes"] is None


def test_a_store_is_disabled_and_enabled_over_the_api(client: TestClient) -> None:
    response = client.patch("/api/v2/stores/drive1", json={"enabled": False}, auth=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    assert listing(client)["drive1"]["enabled"] is False
    assert client.patch("/api/v2/stores/drive1", json={"enabled": True}, auth=ADMIN).json()[
        "enabled"
    ]

    missing = client.patch("/api/v2/stores/nope", json={"enabled": False}, auth=ADMIN)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    for body in ({"enabled": "false"}, {"enabled": 0}, {}, {"enabled": True, "x": 1}):
        bad = client.patch("/api/v2/stores/drive1", json=body, auth=ADMIN)
        assert bad.status_code == 400, body
    assert listing(client)["drive1"]["enabled"] is True


def test_another_drive_with_the_stores_identity_is_reported_not_adopted(
    settings: LibrarianSettings, drive: Path
) -> None:
    first = empty_drive_in_place_of_the_first(settings, drive)
    # ... provisioned for the same store elsewhere.
    second, written = provision_drive(drive, "test-site", "drive1", require_mount=False)
    assert written and second.drive_uuid != first.drive_uuid

    (note,) = ready(settings)
    assert second.drive_uuid in note and first.drive_uuid in note and note.endswith("skipped")
    assert os.listdir(drive) == [IDENTITY_FILE]  # not laid out: it is not where the copies are
    assert recorded_drive(settings) == first.drive_uuid


def test_an_empty_store_takes_a_new_drive(settings: LibrarianSettings, drive: Path) -> None:
    prepare(settings)
    (drive / IDENTITY_FILE).unlink()
    shutil.rmtree(drive / "staging")
    shutil.rmtree(drive / "store")
    assert prepare(settings)[0].startswith("store 'drive1': provisioned drive ")
    second = read_identity(drive)
    assert second is not None
    assert recorded_drive(settings) == second.drive_uuid


def test_init_does_not_provision_a_new_drive_while_copies_are_on_another(
    settings: LibrarianSettings, drive: Path
) -> None:
    first = empty_drive_in_place_of_the_first(settings, drive)
    with pytest.raises(DriveError, match=first.drive_uuid):
        prepare(settings)
    assert os.listdir(drive) == []


def test_undeclared_and_unlaid_stores_say_why(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    settings: LibrarianSettings,
    client: TestClient,
    drive: Path,
) -> None:
    shutil.rmtree(drive / "staging")
    drive1 = listing(client)["drive1"]
    assert drive1["problem"] == "not laid out or not writable (see librarian serve's notes)"
    assert drive1["free_bytes"] is None
    # The config no longer declares the drive: the catalogue still knows it.
    without = make_settings(database_url=database_url)
    with get_catalogue(without.catalogue_url).session() as session:
        sync_stores(session, without)
        rows = {row.name: row for row in store_overview(session, without)}
    assert rows["drive1"].declared is False
    assert rows["drive1"].problem == "no longer declared in the config"
    assert rows["main"].problem is None
