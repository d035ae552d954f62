"""What one user's uploads may hold: reservation caps, expiry of idle uploads, tar entries.

Regression tests for the hardening issue: one user could reserve every store without sending
a byte, reservations never expired, a client killed mid-upload left its partial data
unreported, and a "0-byte" tar of empty directories wrote unbounded metadata.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

from librarian_dagster.api import housekeeping
from librarian_dagster.api.upload_slots import UploadSlots
from librarian_dagster.catalogue.models import Event, IncomingTransfer
from librarian_dagster.services import upload_content, upload_reservations, uploads
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import InsufficientStorage, InvalidRequest
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferStatus, UserLevel
from librarian_dagster.storage import local_store
from librarian_dagster.storage.movers.receive import (
    ROOM_CHECK_EVERY,
    EntryLimits,
    ReceiveError,
    receive_tar,
)
from tests.api_helpers import api_client, credentials
from tests.ingest_helpers import UPLOADER, Site, open_site

ALICE = Principal("alice", UserLevel.READ_APPEND)
BOB = Principal("bob", UserLevel.READ_APPEND)
FREE = 1_000_000


@pytest.fixture
def site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    # A fixed amount of free space: the real one moves while other processes write.
    monkeypatch.setattr(local_store.LocalStore, "free_bytes", lambda _store: FREE)
    return open_site(make_settings(database_url=database_url))


def stage(site: Site, name: str, size: int, who: Principal = ALICE, **ingest: object) -> int:
    with site.catalogue.session() as session:
        transfer, _ = uploads.stage_upload(
            session,
            site.stores,
            name=name,
            size=size,
            checksum=None,
            principal=who,
            source="s",
            ingest=site.settings.ingest.model_copy(update=ingest),
        )
        return transfer.id


def age(site: Site, upload_id: int, hours: float) -> None:
    with site.catalogue.session() as session:
        transfer = session.get(IncomingTransfer, upload_id)
        assert transfer is not None
        transfer.updated_at = datetime.now(UTC) - timedelta(hours=hours)


def status(site: Site, upload_id: int) -> tuple[TransferStatus, str | None]:
    with site.catalogue.session() as session:
        transfer = session.get(IncomingTransfer, upload_id)
        assert transfer is not None
        return transfer.status, transfer.failure_reason


def test_one_user_cannot_reserve_more_than_half_the_free_space(site: Site) -> None:
    stage(site, "alice/1", 400_000)
    with pytest.raises(InsufficientStorage, match="max_reserved_fraction_per_user"):
        stage(site, "alice/2", 200_000)
    assert len(site.staging_listing()) == 1
    stage(site, "bob/1", 400_000, who=BOB)  # another user still has room


def test_the_absolute_cap_names_itself(site: Site) -> None:
    stage(site, "alice/1", 1_000, max_reserved_bytes_per_user=1_500)
    with pytest.raises(InsufficientStorage, match="max_reserved_bytes_per_user"):
        stage(site, "alice/2", 1_000, max_reserved_bytes_per_user=1_500)


def test_committed_uploads_no_longer_count_against_the_cap(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x" * 400_000)
    site.upload("u/1", source)  # staged and committed: its bytes are in staging, not promised
    stage(site, "u/2", 400_000, who=UPLOADER)


def test_idle_uploads_expire_and_free_their_reservation(site: Site) -> None:
    idle = stage(site, "idle/one", 400_000)
    other = stage(site, "idle/two", 1_000)  # the same uploader's second dead upload
    partial = Path(site.staging_path(idle))
    partial.write_bytes(b"half of it")  # a client killed mid-upload, a day ago
    long_ago = time.time() - 25 * 3600
    os.utime(partial, (long_ago, long_ago))
    busy = stage(site, "busy/one", 100_000, who=BOB)
    fresh = stage(site, "fresh/one", 100_000, who=BOB)
    age(site, idle, 25)
    age(site, other, 25)
    age(site, busy, 25)
    # Past expiry, the idle upload reserves nothing even before the sweep runs ...
    stage(site, "alice/again", 400_000)
    expired = upload_reservations.expire_idle_uploads(
        site.catalogue, site.stores, site.settings.ingest, busy={busy}
    )
    # ... and the sweep fails it with the reason and removes its partial data.
    assert expired == 2
    state, reason = status(site, idle)
    assert state == TransferStatus.FAILED and reason and "no bytes received for 24 hours" in reason
    assert not partial.exists() and not partial.parent.exists()
    assert status(site, busy)[0] == TransferStatus.INITIATED  # its body is arriving now
    assert status(site, fresh)[0] == TransferStatus.INITIATED
    assert (
        upload_reservations.expire_idle_uploads(site.catalogue, site.stores, site.settings.ingest)
        == 1  # busy, once no longer busy
    )
    # Each expiry is on the event log, named by its uploader (the alert sensor tells).
    with site.catalogue.session() as session:
        events = session.scalars(
            select(Event).where(Event.kind == upload_reservations.UPLOAD_EXPIRED_KIND)
        ).all()
        told = sorted((e.subject, e.count, e.resolved) for e in events)
        # One event per expiry (each is forwarded), even from the same uploader.
        assert told == sorted([(UPLOADER.name, 1, False)] * 2 + [(BOB.name, 1, False)])
        alices = [e.message for e in events if e.subject == UPLOADER.name]
        assert any("idle/one" in m for m in alices) and any("idle/two" in m for m in alices)


def test_ping_counts_idle_uploads_and_reserved_bytes(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with api_client(settings) as client:
        auth = credentials(UserLevel.READ_APPEND)
        first = client.post("/api/v2/uploads", json={"name": "a/1", "size": 10}, auth=auth)
        second = client.post("/api/v2/uploads", json={"name": "a/2", "size": 20}, auth=auth)
        assert first.status_code == second.status_code == 201
        site = open_site(settings)
        age(site, first.json()["upload_id"], 2)
        (store,) = client.get("/api/v2/ping").json()["stores"]
        assert store["idle_uploads"] == 1 and store["reserved_bytes"] == 30


def test_a_body_touches_the_upload_and_a_lapsed_one_takes_none(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(database_url=database_url)
    # The requests alone, not the API's own sweep (the next test's): a sweep that ran late
    # on a loaded machine expired "t/gone" first, and its name was then free (201).
    monkeypatch.setattr(housekeeping, "expire_idle_uploads", lambda *args, **kwargs: None)
    with api_client(settings) as client:
        auth = credentials(UserLevel.READ_APPEND)
        site = open_site(settings)

        def staged(name: str) -> int:
            response = client.post("/api/v2/uploads", json={"name": name, "size": 3}, auth=auth)
            return response.json()["upload_id"]

        def put(upload_id: int) -> int:
            return client.put(
                f"/api/v2/uploads/{upload_id}/content",
                content=b"abc",
                headers={"content-type": "application/octet-stream"},
                auth=auth,
            ).status_code

        idle, gone = staged("t/idle"), staged("t/gone")
        age(site, idle, 2)
        age(site, gone, 30)
        assert put(idle) == 200
        with site.catalogue.session() as session:
            touched = session.get(IncomingTransfer, idle)
            assert touched is not None
            assert datetime.now(UTC) - touched.updated_at < timedelta(minutes=1)
        # Past expiry its space is no longer reserved: it may not be revived (409).
        assert put(gone) == 409
        resumed = client.post("/api/v2/uploads", json={"name": "t/gone", "size": 3}, auth=auth)
        assert resumed.status_code == 409 and "expired" in resumed.json()["detail"]


def test_the_api_sweeps_idle_uploads_on_its_own(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep runs in the API's lifespan, without any request asking for it."""
    monkeypatch.setattr(housekeeping, "SWEEP_SECONDS", 0.05)
    settings = make_settings(database_url=database_url)
    site = open_site(settings)
    with api_client(settings) as client:
        auth = credentials(UserLevel.READ_APPEND)
        upload_id = client.post(
            "/api/v2/uploads", json={"name": "swept/one", "size": 3}, auth=auth
        ).json()["upload_id"]
        age(site, upload_id, 25)
        deadline = time.monotonic() + 20
        while status(site, upload_id)[0] != TransferStatus.FAILED:
            assert time.monotonic() < deadline, "the sweep never ran"
            time.sleep(0.05)
        assert "expired" in (status(site, upload_id)[1] or "")


def _tar(directories: int, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for index in range(directories):
            member = tarfile.TarInfo(f"d{index:05d}")
            member.type = tarfile.DIRTYPE
            archive.addfile(member)
        for name, data in (files or {}).items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _put_tar(client: TestClient, name: str, size: int, body: bytes) -> tuple[int, int]:
    auth = credentials(UserLevel.READ_APPEND)
    upload_id = client.post("/api/v2/uploads", json={"name": name, "size": size}, auth=auth).json()[
        "upload_id"
    ]
    response = client.put(
        f"/api/v2/uploads/{upload_id}/content",
        content=body,
        headers={"content-type": "application/x-tar"},
        auth=auth,
    )
    return upload_id, response.status_code


def test_a_zero_byte_tar_of_many_directories_is_refused(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with api_client(settings) as client:
        upload_id, code = _put_tar(client, "empty/dirs", 0, _tar(1_500))
        assert code == 400
        site = open_site(settings)
        with site.catalogue.session() as session:
            transfer = session.get(IncomingTransfer, upload_id)
            assert transfer is not None and transfer.status == TransferStatus.INITIATED
            assert not Path(transfer.staging_path).exists()  # nothing of it is kept
        # Within the allowance (1,000 entries + 1 per 512 declared bytes), a book is fine.
        files = {f"f{i:04d}": b"x" * 100 for i in range(1_200)}
        _, code = _put_tar(client, "small/files", 120_000, _tar(10, files))
        assert code == 200


def test_max_entries_per_book_caps_any_book(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> None:
    settings = make_settings(
        database_url=database_url, extra_toml="[ingest]\nmax_entries_per_book = 50"
    )
    files = {f"f{i:03d}": b"x" * 1000 for i in range(60)}
    with api_client(settings) as client:
        _, code = _put_tar(client, "too/many", 60_000, _tar(0, files))
        assert code == 400


def test_receive_tar_counts_entries_in_the_service(site: Site) -> None:
    """The same refusal when the service is called directly (no HTTP)."""
    upload_id = stage(site, "svc/dirs", 0)
    with pytest.raises(InvalidRequest, match="entries"):
        upload_content.receive_content(
            site.catalogue,
            site.stores,
            upload_id,
            ALICE,
            io.BytesIO(_tar(1_001)),
            media_type="application/x-tar",
            default_algorithm="xxh3_128",
            ingest=site.settings.ingest,
        )


def test_unpacking_stops_when_the_store_runs_out_of_room(tmp_path: Path) -> None:
    """``has_room`` is asked every ROOM_CHECK_EVERY entries; a full store ends the unpack."""
    files = {f"f{i:05d}": b"x" for i in range(ROOM_CHECK_EVERY + 10)}
    asked: list[bool] = []

    def has_room() -> bool:
        asked.append(True)
        return False

    limits = EntryLimits(max_entries=10**6, min_bytes_per_entry=0, has_room=has_room)
    with pytest.raises(ReceiveError, match="ran out of room"):
        receive_tar(io.BytesIO(_tar(0, files)), tmp_path / "book", "xxh3_128", 10**6, limits)
    assert asked == [True]


def test_implicit_parent_directories_count_as_entries(tmp_path: Path) -> None:
    """A member ``a/b/c/.../f`` creates every missing parent: each is an entry."""
    deep = "/".join(f"d{i}" for i in range(60))
    files = {f"{deep}/f{i}": b"" for i in range(20)}
    limits = EntryLimits(max_entries=50, min_bytes_per_entry=0)
    with pytest.raises(ReceiveError, match="entries"):
        receive_tar(io.BytesIO(_tar(0, files)), tmp_path / "book", "xxh3_128", 0, limits)


def test_a_shared_filesystem_copy_in_progress_is_not_expired(site: Site) -> None:
    """Bytes copied into staging directly (no HTTP body) keep the upload alive."""
    upload_id = stage(site, "fs/copy", 100, who=UPLOADER)
    Path(site.staging_path(upload_id)).write_bytes(b"being copied")  # mtime: now
    age(site, upload_id, 25)
    assert (
        upload_reservations.expire_idle_uploads(site.catalogue, site.stores, site.settings.ingest)
        == 0
    )
    assert status(site, upload_id)[0] == TransferStatus.INITIATED


def test_a_cancel_while_a_body_arrives_leaves_exactly_one_removal(
    site: Site, tmp_path: Path
) -> None:
    """The body's writer has checked the status (not cancelled yet) and is about to end when
    the cancel commits: the removal is handed to it under the slots' lock and done once the
    body has ended, never by both and never by neither."""
    slots = UploadSlots(per_user=2, total=4)
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 100)
    arriving = site.stage("handover/body", payload)
    staging = site.staging_path(arriving).parent
    with slots.hold(arriving, UPLOADER.name) as left_to_body:
        uploads.cancel_upload(
            site.catalogue, site.stores, arriving, UPLOADER, leave_removal=slots.leave_to_body
        )
        assert staging.exists(), "removed under a body that may still be writing"
        assert left_to_body == []  # handed over only as the slot is released
    assert len(left_to_body) == 1
    left_to_body[0]()
    assert not staging.exists()
    assert site.status(arriving)[0] == "cancelled"

    idle = site.stage("handover/idle", payload)
    idle_staging = site.staging_path(idle).parent
    uploads.cancel_upload(
        site.catalogue, site.stores, idle, UPLOADER, leave_removal=slots.leave_to_body
    )
    assert not idle_staging.exists()  # no body arriving: the cancel removes it itself
