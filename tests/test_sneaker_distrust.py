"""A drive's round trip when something lies or goes wrong, on SQLite and PostgreSQL.

A "drive" whose ``store`` directory leads elsewhere, a book catalogued at the destination
whose copy there is out of service, a confirmation for a drive that was never shipped, a
drive unplugged in the middle of its ingest, a second trip of the same drive, and a wipe
of books that no peer confirmed. Each time: what is refused, and that nothing else moved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from librarian_dagster.catalogue.models import (
    CallbackOutbox,
    Event,
    File,
    IncomingTransfer,
    Instance,
    Librarian,
)
from librarian_dagster.services.errors import Conflict
from librarian_dagster.services.sneaker import fill_drive
from librarian_dagster.services.sneaker_manifest import write_manifest
from librarian_dagster.services.sneaker_plan import DriveRefused
from librarian_dagster.services.sneaker_return import complete_drive_books, wipe_drive
from librarian_dagster.states import DriveState
from librarian_dagster.wire.sneaker import MANIFEST_FILE, DeliveredBook, SneakerComplete
from tests.clone_helpers import CloneSite, deliver
from tests.test_sneaker_roundtrip import (
    ADMIN,
    BACKENDS,
    BOOKS,
    copy_at_b,
    drive_of,
    drive_sites,
    drive_state,
    filled_and_shipped,
    ingest_at_b,
    names_at,
    remote_at,
    upload,
)


@pytest.fixture(params=BACKENDS)
def sites(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    with drive_sites(request.param, tmp_path) as found:
        yield found


def owed_names(site: CloneSite) -> list[str]:
    with site.catalogue.session() as session:
        bodies = session.scalars(select(CallbackOutbox.payload)).all()
    return sorted(book["name"] for body in bodies for book in body.get("books", []))


def test_a_drive_whose_store_is_a_symlink_is_refused_and_nothing_read(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    books = drive_of(sites) / "store"
    books.rename(drive_of(sites) / "elsewhere")
    books.symlink_to(drive_of(sites) / "elsewhere")  # could lead anywhere on the machine
    b = sites["site-b"]
    response = b.client.post(
        "/api/v2/sneaker/ingest", json={"drive": str(drive_of(sites))}, auth=ADMIN
    )
    assert response.status_code == 400, response.text
    assert "store is not a directory: this is not a librarian's drive" in response.json()["detail"]
    with b.catalogue.session() as session:
        assert session.scalar(select(func.count()).select_from(IncomingTransfer)) == 0
    assert names_at(b) == {} and owed_names(b) == []


def test_a_book_here_with_no_copy_in_service_is_not_confirmed_to_the_origin(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    filled_and_shipped(sites, tmp_path)
    upload(b, BOOKS[0], bytes([0]) * 1000, tmp_path)  # the same book, same checksum
    with b.catalogue.session() as session:  # its copy at b went bad
        session.execute(update(Instance).values(available=False))
    result = ingest_at_b(sites)
    assert result["states"] == {BOOKS[0]: "refused", BOOKS[1]: "stored", BOOKS[2]: "stored"}
    (refused,) = [x for x in result["plan"]["books"] if x["state"] == "refused"]
    assert refused["reason"] == (
        "it is catalogued here but no copy of it is in service (corrupt or offline)"
    )
    assert owed_names(b) == [BOOKS[1], BOOKS[2]]  # never "we hold it" for BOOKS[0]
    deliver(b, sites)
    assert remote_at(a, "site-b") == {(BOOKS[1], "main"), (BOOKS[2], "main")}
    assert drive_state(a) == DriveState.IN_TRANSIT  # not returned: BOOKS[0] not confirmed
    with pytest.raises(DriveRefused, match=f"1 books on the drive .* {BOOKS[0]}"):
        wipe_drive(a.catalogue, a.settings, "drive1")
    assert (drive_of(sites) / "store" / BOOKS[0]).exists()


def test_a_confirmation_for_a_drive_not_shipped_records_nothing(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = sites["site-a"]
    for i, name in enumerate(BOOKS):
        upload(a, name, bytes([i]) * (1000 + i), tmp_path)
    fill_drive(a.catalogue, a.settings, "drive1")  # filling: no manifest let it go
    identity = json.loads((drive_of(sites) / ".librarian-drive.json").read_text())
    checksums = names_at(a)
    body = SneakerComplete(
        drive_uuid=identity["drive_uuid"],
        store="drive1",
        books=[DeliveredBook(name=n, checksum=checksums[n], store="main") for n in BOOKS],
    )
    with a.catalogue.session() as session:
        caller = session.scalar(select(Librarian).where(Librarian.name == "site-b"))
        assert caller is not None
        ack = complete_drive_books(session, a.settings, caller, body)
    assert (ack.recorded, ack.unknown) == (0, sorted(BOOKS))
    assert remote_at(a, "site-b") == set()
    with pytest.raises(DriveRefused, match="3 books on the drive have no confirmed copy"):
        wipe_drive(a.catalogue, a.settings, "drive1")


def test_a_drive_unplugged_mid_ingest_fails_the_run_and_refuses_nothing(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    response = b.client.post(
        "/api/v2/sneaker/ingest", json={"drive": str(drive_of(sites))}, auth=ADMIN
    )
    uuid = response.json()["drive_uuid"]
    away = drive_of(sites).with_name("unplugged")

    def unplug(outcome: object) -> None:
        if not away.exists():
            drive_of(sites).rename(away)

    with pytest.raises(Conflict, match=f"no drive identity|not drive {uuid}"):
        copy_at_b(sites, uuid, "first", done=unplug)
    os.mkdir(drive_of(sites))  # an empty mount point, as an unplugged drive leaves
    with pytest.raises(Conflict):
        copy_at_b(sites, uuid, "second")
    with b.catalogue.session() as session:
        failed = session.scalar(select(func.count()).where(IncomingTransfer.status == "failed"))
    assert failed == 0 and set(names_at(b)) == {BOOKS[0]}
    drive_of(sites).rmdir()
    away.rename(drive_of(sites))  # plugged in again: the ingest finishes
    assert ingest_at_b(sites)["states"] == dict.fromkeys(BOOKS, "stored")


def test_a_second_trip_of_the_drive_is_told_apart_from_the_first(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    first_manifest = filled_and_shipped(sites, tmp_path)
    manifest = json.loads((drive_of(sites) / MANIFEST_FILE).read_text())
    manifest["books"][2]["checksum"] = "xxh3_128:" + "0" * 32  # refused on trip 1
    (drive_of(sites) / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert ingest_at_b(sites)["states"][BOOKS[2]] == "refused"
    deliver(b, sites)
    wiped = wipe_drive(a.catalogue, a.settings, "drive1", force=True)  # BOOKS[2] travels again
    assert wiped.books == 3
    upload(a, "2026/12/04/d.uvh5", b"d" * 500, tmp_path)
    assert fill_drive(a.catalogue, a.settings, "drive1").copied == [BOOKS[2], "2026/12/04/d.uvh5"]
    written = write_manifest(a.catalogue, a.settings, "drive1", tmp_path / "trip2.json", force=True)
    assert written.manifest.trip == 2
    old = b.client.post(
        "/api/v2/sneaker/ingest",
        json={"drive": str(drive_of(sites)), "manifest": json.loads(first_manifest.read_text())},
        auth=ADMIN,
    )
    assert old.status_code == 409, old.text
    assert "the manifest given is of trip 1" in old.json()["detail"]
    second = ingest_at_b(sites)
    assert second["status"]["trip"] == 2
    assert second["states"] == {BOOKS[2]: "stored", "2026/12/04/d.uvh5": "stored"}
    assert {x["name"] for x in second["status"]["books"]} == {BOOKS[2], "2026/12/04/d.uvh5"}


def test_wipe_force_keeps_every_book_whose_only_copy_is_the_drive(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = sites["site-a"]
    filled_and_shipped(sites, tmp_path)  # never ingested anywhere
    with pytest.raises(DriveRefused, match="--force wipes those that have another copy"):
        wipe_drive(a.catalogue, a.settings, "drive1")
    with a.catalogue.session() as session:  # a's own copy of one book went bad
        bad = session.scalar(select(File.id).where(File.name == BOOKS[1]))
        session.execute(
            update(Instance)
            .where(Instance.file_id == bad, Instance.path.not_like(f"{drive_of(sites)}%"))
            .values(available=False)
        )
    with pytest.raises(DriveRefused, match=f"no other copy in service here: {BOOKS[1]}"):
        wipe_drive(a.catalogue, a.settings, "drive1", force=True)
    assert sorted(p.name for p in (drive_of(sites) / "store").rglob("*.uvh5")) == [
        "a.uvh5",
        "b.uvh5",
        "c.uvh5",
    ]
    with a.catalogue.session() as session:
        session.execute(update(Instance).values(available=True))
    wiped = wipe_drive(a.catalogue, a.settings, "drive1", force=True)
    assert wiped.books == 3 and drive_state(a) == DriveState.FILLING
    with a.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "drive_wiped_undelivered"))
    assert "3 books on it were not confirmed at a peer" in event.message
