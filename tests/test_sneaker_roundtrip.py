"""A drive's round trip between two librarians in one process, on SQLite and PostgreSQL.

site-a fills its drive and writes the manifest; site-b ingests the drive through its real
API route and the same services its run uses; callbacks go back through the outbox and
site-a's real ``/sneaker/complete`` route; then site-a wipes the drive. Bad input (a wrong
checksum, another drive's manifest, a garbled one, a book missing from the drive, a
conflicting book) is refused, each time with what changed checked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from librarian_dagster.catalogue.models import (
    CallbackOutbox,
    Event,
    File,
    IncomingTransfer,
    Instance,
    RemoteInstance,
    Store,
)
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.services.errors import Conflict, InvalidRequest
from librarian_dagster.services.ingest import IngestOutcome
from librarian_dagster.services.sneaker import fill_drive
from librarian_dagster.services.sneaker_copy import copy_and_store
from librarian_dagster.services.sneaker_ingest import plan_ingest
from librarian_dagster.services.sneaker_manifest import write_manifest
from librarian_dagster.services.sneaker_plan import DriveRefused
from librarian_dagster.services.sneaker_return import forget_lost_drive, wipe_drive
from librarian_dagster.states import DriveState
from librarian_dagster.storage import posix
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.wire.sneaker import MANIFEST_FILE, SneakerIngestRequest
from tests.clone_helpers import CloneSite, befriend_both, clone_sites, deliver, postgres_schemas
from tests.ingest_helpers import Site

ADMIN = ("admin", "admin-password")
BOOKS = ["2026/12/01/a.uvh5", "2026/12/02/b.uvh5", "2026/12/03/c.uvh5"]


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def drive_sites(backend: str, tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    """site-a with a sneaker store bound for site-b, peers of each other."""
    drive = tmp_path / "drive1"
    drive.mkdir()
    extra = {
        "site-a": (
            f'[[stores]]\nname = "drive1"\nkind = "sneaker"\nroot = "{drive}"\n'
            'require_mount = false\nreserve_bytes = 0\ndestination = "site-b"\n'
        )
    }
    if backend == "sqlite":
        with clone_sites(tmp_path, ["site-a", "site-b"], extra_toml=extra) as found:
            befriend_both(found["site-a"], found["site-b"])
            yield found
        return
    with (
        postgres_schemas(2) as urls,
        clone_sites(tmp_path, ["site-a", "site-b"], urls, extra_toml=extra) as found,
    ):
        befriend_both(found["site-a"], found["site-b"])
        yield found


@pytest.fixture(params=BACKENDS)
def sites(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    with drive_sites(request.param, tmp_path) as found:
        yield found


def drive_of(sites: dict[str, CloneSite]) -> Path:
    return sites["site-a"].settings.stores[1].root


def upload(site: CloneSite, name: str, data: bytes, tmp: Path) -> None:
    source = tmp / name.replace("/", "_")
    source.write_bytes(data)
    helper = Site(site.settings, site.catalogue, site.stores)
    outcome = helper.ingest(helper.upload(name, source))
    assert outcome.status == "stored", outcome


def filled_and_shipped(sites: dict[str, CloneSite], tmp_path: Path) -> Path:
    """site-a's drive holds BOOKS, with its manifest; the manifest file kept apart."""
    a = sites["site-a"]
    for i, name in enumerate(BOOKS):
        upload(a, name, bytes([i]) * (1000 + i), tmp_path)
    assert fill_drive(a.catalogue, a.settings, "drive1").copied == BOOKS
    out = tmp_path / "manifest.json"
    written = write_manifest(a.catalogue, a.settings, "drive1", out, force=True)  # not full
    assert [book.name for book in written.manifest.books] == BOOKS
    assert all(book.origin_store == "main" for book in written.manifest.books)
    return out


def copy_at_b(
    sites: dict[str, CloneSite],
    drive_uuid: str,
    run_id: str,
    done: Callable[[IngestOutcome], None] | None = None,
) -> None:
    """What site-b's ingest_sneaker_drive run does with the drive in its slot."""
    b = sites["site-b"]
    copy_and_store(
        b.catalogue,
        b.settings,
        b.stores,
        drive_uuid,
        str(drive_of(sites)),
        run_id=run_id,
        run_is_active=lambda _: False,
        done=done,
    )


def ingest_at_b(sites: dict[str, CloneSite], **body: Any) -> dict[str, Any]:
    b = sites["site-b"]
    response = b.client.post(
        "/api/v2/sneaker/ingest", json={"drive": str(drive_of(sites)), **body}, auth=ADMIN
    )
    assert response.status_code == 202, response.text
    uuid = response.json()["drive_uuid"]
    copy_at_b(sites, uuid, "drive-run")
    status = b.client.get(f"/api/v2/sneaker/ingest/{uuid}", auth=ADMIN)
    assert status.status_code == 200, status.text
    answer = response.json()
    states = {book["name"]: book["state"] for book in answer["books"]}
    states |= {book["name"]: book["state"] for book in status.json()["books"]}
    return {"plan": answer, "states": states, "status": status.json()}


def names_at(site: CloneSite) -> dict[str, str]:
    with site.catalogue.session() as session:
        return dict(session.execute(select(File.name, File.checksum)).tuples().all())


def remote_at(site: CloneSite, peer: str) -> set[tuple[str, str]]:
    with site.catalogue.session() as session:
        peer_id = site.peer_id(peer)
        return set(
            session.execute(
                select(File.name, RemoteInstance.store_name)
                .join(RemoteInstance, RemoteInstance.file_id == File.id)
                .where(RemoteInstance.librarian_id == peer_id)
            )
            .tuples()
            .all()
        )


def drive_state(site: CloneSite) -> DriveState | None:
    with site.catalogue.session() as session:
        return session.scalar(select(Store.state).where(Store.name == "drive1"))


def test_a_drive_goes_there_and_back(sites: dict[str, CloneSite], tmp_path: Path) -> None:
    a, b = sites["site-a"], sites["site-b"]
    filled_and_shipped(sites, tmp_path)
    assert drive_state(a) == DriveState.IN_TRANSIT
    result = ingest_at_b(sites)
    assert result["states"] == dict.fromkeys(BOOKS, "stored")
    assert names_at(b) == {name: checksum for name, checksum in names_at(a).items()}
    for name in BOOKS:  # the drive is left as it was
        assert str(hash_path(drive_of(sites) / "store" / name)) == names_at(a)[name]
    assert remote_at(b, "site-a") == {(name, "main") for name in BOOKS}
    with pytest.raises(DriveRefused, match="3 books on the drive have no confirmed copy"):
        wipe_drive(a.catalogue, a.settings, "drive1")  # nothing heard from b yet
    down = deliver(b, sites, down=frozenset({"site-a"}))
    assert (down.taken, down.delivered) == (3, 0)  # a is down: kept for later
    assert remote_at(a, "site-b") == set()
    time.sleep(0.05)  # the back-off (10 ms here)
    assert deliver(b, sites).delivered == 3
    assert remote_at(a, "site-b") == {(name, "main") for name in BOOKS}
    assert drive_state(a) == DriveState.RETURNED
    wiped = wipe_drive(a.catalogue, a.settings, "drive1")
    assert (wiped.books, wiped.bytes) == (3, 3000 + 0 + 1 + 2)
    assert list((drive_of(sites) / "store").iterdir()) == []
    assert not (drive_of(sites) / MANIFEST_FILE).exists()
    assert (drive_of(sites) / ".librarian-drive.json").exists()
    assert drive_state(a) == DriveState.FILLING
    with a.catalogue.session() as session:
        row = session.scalar(select(Store).where(Store.name == "drive1"))
        assert row is not None and row.fill_high_water_file_id == 0
        assert session.scalar(select(func.count()).where(Instance.store_id == row.id)) == 0
    # Refilled, it carries nothing: site-b holds every book already.
    assert fill_drive(a.catalogue, a.settings, "drive1").copied == []


def test_a_wrong_checksum_refuses_that_book_only(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    manifest_path = drive_of(sites) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["books"][1]["checksum"] = "xxh3_128:" + "0" * 32
    manifest_path.write_text(json.dumps(manifest))
    result = ingest_at_b(sites)
    assert result["states"] == {BOOKS[0]: "stored", BOOKS[1]: "refused", BOOKS[2]: "stored"}
    (refused,) = [b for b in result["status"]["books"] if b["state"] == "refused"]
    assert "checksum mismatch: the drive's copy is not the manifest's" in refused["reason"]
    held = names_at(sites["site-a"])[BOOKS[1]]
    assert held.split(":")[1] not in refused["reason"]  # what the drive holds is not told
    b = sites["site-b"]
    assert set(names_at(b)) == {BOOKS[0], BOOKS[2]}
    assert remote_at(b, "site-a") == {(BOOKS[0], "main"), (BOOKS[2], "main")}
    with b.catalogue.session() as session:  # the origin will hear of the two only
        owed = session.scalars(select(CallbackOutbox.payload)).all()
        event = session.scalar(select(Event).where(Event.kind == "sneaker_refused"))
    assert sorted(book["name"] for body in owed for book in body["books"]) == [
        BOOKS[0],
        BOOKS[2],
    ]
    assert event is not None and event.details["found"] == held  # operators are told
    staging = sites["site-b"].store.staging_dir
    assert list(staging.iterdir()) == []  # the refused copy is gone; the drive keeps it
    assert (drive_of(sites) / "store" / BOOKS[1]).exists()


def test_a_book_missing_from_the_drive_is_refused_the_others_stored(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    missing = drive_of(sites) / "store" / BOOKS[0]
    missing.parent.chmod(0o755)
    missing.chmod(0o644)
    missing.unlink()
    result = ingest_at_b(sites)
    assert result["states"] == {BOOKS[0]: "refused", BOOKS[1]: "stored", BOOKS[2]: "stored"}
    (refused,) = [b for b in result["plan"]["books"] if b["state"] == "refused"]
    assert refused["reason"] == "it is not on the drive"
    with sites["site-b"].catalogue.session() as session:
        assert session.scalar(select(func.count()).where(Event.kind == "sneaker_refused")) == 1


@pytest.mark.parametrize("damage", ["other-uuid", "truncated", "garbled", "wrong-format"])
def test_a_manifest_that_is_not_this_drives_changes_nothing(
    sites: dict[str, CloneSite], tmp_path: Path, damage: str
) -> None:
    filled_and_shipped(sites, tmp_path)
    path = drive_of(sites) / MANIFEST_FILE
    text = path.read_text()
    if damage == "other-uuid":
        manifest = json.loads(text)
        manifest["drive_uuid"] = "00000000-0000-4000-8000-000000000000"
        path.write_text(json.dumps(manifest))
        expected, status = "the manifest is of drive 00000000-0000-4000-8000-000000000000", 409
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
        expected, status = "is not a manifest: not JSON at line", 400
    elif damage == "garbled":
        path.write_bytes(b"\xff\xfe garbage")
        expected, status = "is not a manifest: not JSON", 400
    else:
        manifest = json.loads(text)
        manifest["version"] = 7
        path.write_text(json.dumps(manifest))
        expected, status = "is not a manifest: version: Input should be 1", 400
    b = sites["site-b"]
    response = b.client.post(
        "/api/v2/sneaker/ingest", json={"drive": str(drive_of(sites))}, auth=ADMIN
    )
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"]
    assert "\n" not in response.json()["detail"]
    with b.catalogue.session() as session:
        assert session.scalar(select(func.count()).select_from(IncomingTransfer)) == 0
    assert names_at(b) == {}
    assert list(b.store.staging_dir.iterdir()) == []


def test_a_manifest_given_apart_from_the_drive_is_used(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    out = filled_and_shipped(sites, tmp_path)
    (drive_of(sites) / MANIFEST_FILE).unlink()
    result = ingest_at_b(sites, manifest=json.loads(out.read_text()))
    assert result["states"] == dict.fromkeys(BOOKS, "stored")


def test_an_interrupted_ingest_resumes_without_duplicates(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    with b.catalogue.session() as session:
        plan = plan_ingest(
            session, b.settings, b.stores, SneakerIngestRequest(drive=str(drive_of(sites)))
        )

    def killed(outcome: object) -> None:
        raise KeyboardInterrupt  # the run dies after its first book

    with pytest.raises(KeyboardInterrupt):
        copy_at_b(sites, plan.status.drive_uuid, "first", done=killed)
    assert set(names_at(b)) == {BOOKS[0]}
    result = ingest_at_b(sites)  # asked again: the first is here, the others resume
    assert {b["name"]: b["state"] for b in result["plan"]["books"]} == {
        BOOKS[0]: "present",
        BOOKS[1]: "waiting",
        BOOKS[2]: "waiting",
    }
    assert result["states"] == dict.fromkeys(BOOKS, "stored")
    with b.catalogue.session() as session:
        rows = session.scalars(select(IncomingTransfer.name).order_by(IncomingTransfer.id)).all()
    assert rows == BOOKS  # one transfer per book, none twice
    assert set(names_at(b)) == set(BOOKS)


def test_a_book_here_under_another_checksum_is_never_overwritten(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    b = sites["site-b"]
    upload(b, BOOKS[2], b"something else entirely", tmp_path)
    before = names_at(b)[BOOKS[2]]
    result = ingest_at_b(sites)
    assert result["states"][BOOKS[2]] == "refused"
    assert names_at(b)[BOOKS[2]] == before
    assert result["states"][BOOKS[0]] == "stored"


def test_a_drive_that_is_no_peers_or_our_own_is_refused(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    filled_and_shipped(sites, tmp_path)
    a = sites["site-a"]
    with a.catalogue.session() as session, pytest.raises(Conflict, match="filled by this"):
        plan_ingest(session, a.settings, a.stores, SneakerIngestRequest(drive=str(drive_of(sites))))
    with pytest.raises(InvalidRequest, match="must be an absolute path"):
        plan_ingest(
            None,  # type: ignore[arg-type]
            a.settings,
            a.stores,
            SneakerIngestRequest(drive="relative/drive"),
        )


def test_a_manifest_is_refused_while_filling_unless_forced(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = sites["site-a"]
    upload(a, BOOKS[0], b"x" * 10, tmp_path)
    fill_drive(a.catalogue, a.settings, "drive1")
    with pytest.raises(DriveRefused, match="still filling; --force"):
        write_manifest(a.catalogue, a.settings, "drive1", tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists() and drive_state(a) == DriveState.FILLING
    written = write_manifest(a.catalogue, a.settings, "drive1", tmp_path / "m.json", force=True)
    assert len(written.manifest.books) == 1 and drive_state(a) == DriveState.IN_TRANSIT
    with pytest.raises(DriveRefused, match="is in_transit, not filling"):
        fill_drive(a.catalogue, a.settings, "drive1")


def test_a_lost_drive_is_forgotten_and_its_books_go_on_the_next_one(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = sites["site-a"]
    filled_and_shipped(sites, tmp_path)
    with a.catalogue.session() as session:  # one book's copy here went bad meanwhile
        session.execute(
            update(Instance)
            .where(
                Instance.file_id == select(File.id).where(File.name == BOOKS[0]).scalar_subquery()
            )
            .values(available=False)
        )
    posix.remove_tree(drive_of(sites))  # lost in the post
    forgotten = forget_lost_drive(a.catalogue, a.settings, "drive1")
    assert (forgotten.books, forgotten.without_copies) == (3, [BOOKS[0]])
    with a.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "drive_lost")).all()
        assert BOOKS[0] in event.message and event.severity == "critical"
    assert drive_state(a) == DriveState.FILLING
    drive_of(sites).mkdir()  # a new, empty drive in the slot
    prepare(a.settings)
    refill = fill_drive(a.catalogue, a.settings, "drive1")
    assert refill.copied == BOOKS[1:]  # the bad one waits for its repair
    assert [name for name, _ in refill.held] == [BOOKS[0]]


def test_ping_judges_a_drive_by_where_it_should_be(
    sites: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = sites["site-a"]

    def drive1() -> tuple[bool, dict[str, Any]]:
        body = a.client.get("/api/v2/ping").json()
        (found,) = [s for s in body["stores"] if s["name"] == "drive1"]
        return body["healthy"], found

    healthy, found = drive1()
    assert healthy and found["ok"] and found["state"] == "filling"
    away = drive_of(sites).with_name("elsewhere")
    drive_of(sites).rename(away)
    healthy, found = drive1()  # filling, yet no drive: something is wrong
    assert not healthy and (found["ok"], found["error"]) == (False, "no drive mounted")
    away.rename(drive_of(sites))
    filled_and_shipped(sites, tmp_path)
    drive_of(sites).rename(away)
    healthy, found = drive1()  # shipped: away is where it should be
    assert healthy and found["ok"] and found["state"] == "in_transit"
    drive_of(sites).mkdir()  # another drive in its slot
    (drive_of(sites) / ".librarian-drive.json").write_text(
        (away / ".librarian-drive.json").read_text().replace('"drive1"', '"drive2"')
    )
    healthy, found = drive1()
    assert not healthy and "holds store 'drive2''s drive" in found["error"]
    patched = a.client.patch("/api/v2/stores/drive1", json={"enabled": False}, auth=ADMIN)
    assert patched.status_code == 200, patched.text
    healthy, found = drive1()  # disabled by the operator: out of the verdict
    assert healthy and not found["enabled"] and not found["ok"]
