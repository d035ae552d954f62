"""Cloning between librarians in one process: the whole pipeline, on SQLite and PostgreSQL.

Two real librarians (catalogues, stores, APIs with auth) talk through their HTTP routes;
``LocalMover`` moves the bytes; ``clone_helpers.pump`` plays the sensors and runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from librarian_dagster.catalogue.models import (
    File,
    Instance,
    OutgoingTransfer,
    RemoteInstance,
    TransferBatch,
)
from librarian_dagster.states import TransferStatus
from librarian_dagster.storage.checksums import hash_path
from tests.clone_helpers import (
    CloneSite,
    befriend,
    befriend_both,
    clone_sites,
    postgres_schemas,
    pump,
    step_sender,
)
from tests.ingest_helpers import Site, make_book


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    """Librarians a and b, each a peer of the other."""
    if request.param == "sqlite":
        with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
            befriend(sites["site-a"], sites["site-b"])
            befriend(sites["site-b"], sites["site-a"])
            yield sites
        return
    with postgres_schemas(2) as urls, clone_sites(tmp_path, ["site-a", "site-b"], urls) as sites:
        befriend(sites["site-a"], sites["site-b"])
        befriend(sites["site-b"], sites["site-a"])
        yield sites


def upload(site: CloneSite, tmp_path: Path, count: int, prefix: str = "2026/12") -> list[str]:
    """``count`` books ingested at ``site`` (files, and every third a directory)."""
    helper = Site(site.settings, site.catalogue, site.stores)
    names = []
    for i in range(count):
        name = f"{prefix}/book{i:04d}"
        if i % 3 == 2:
            source = make_book(tmp_path / "src" / site.name, f"d{i}")
        else:
            source = tmp_path / "src" / site.name / f"f{i}"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(os.urandom(100 + i))
        upload_id = helper.upload(name, source)
        assert helper.ingest(upload_id).status == "stored"
        names.append(name)
    return names


def count(site: CloneSite, model: type, *where: object) -> int:
    with site.catalogue.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def sent_items(site: CloneSite) -> list[str]:
    """Every book the mover was given, over all tasks (a book twice would be sent twice)."""
    mover = site.mover
    return [item.destination for task in mover.task_ids() for item in mover.items_of(task)]


def test_books_reach_the_peer_verified_and_both_sides_know_where_they_are(
    pair: dict[str, CloneSite], tmp_path: Path
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    names = upload(a, tmp_path, 7)
    pump(pair)
    with b.catalogue.session() as session:
        stored = {f.name: f for f in session.scalars(select(File))}
        assert sorted(stored) == names
        for file in stored.values():
            (instance,) = session.scalars(select(Instance).where(Instance.file_id == file.id))
            assert str(hash_path(instance.path)) == file.checksum
            (remote,) = session.scalars(
                select(RemoteInstance).where(RemoteInstance.file_id == file.id)
            )
            assert remote.librarian.name == "site-a" and remote.store_name == "main"
            assert file.source == "site-a" and file.uploader == "alice"
    with a.catalogue.session() as session:
        remotes = session.execute(
            select(File.name, RemoteInstance.store_name)
            .join(RemoteInstance, RemoteInstance.file_id == File.id)
            .order_by(File.name)
        ).all()
        assert remotes == [(name, "main") for name in names]
        assert set(session.scalars(select(OutgoingTransfer.status))) == {TransferStatus.STORED}
    assert len(sent_items(a)) == len(set(sent_items(a))) == 7
    # Nothing goes back: b knows a holds every book it received.
    assert count(b, OutgoingTransfer) == 0 and sent_items(b) == []
    assert list(b.store.staging_dir.iterdir()) == []
    pump(pair)  # a second pass finds nothing to do
    assert len(sent_items(a)) == 7


def test_batches_respect_batch_max_and_each_book_goes_once(tmp_path: Path) -> None:
    with clone_sites(
        tmp_path, ["site-a", "site-b"], batch_max=4, batch_min=4, batch_max_wait_seconds=3600
    ) as sites:
        befriend_both(sites["site-a"], sites["site-b"])
        a = sites["site-a"]
        upload(a, tmp_path, 10)
        step_sender(a, sites)
        # 10 books, batches of at least 4 and at most 4: two batches now, 2 books wait.
        with a.catalogue.session() as session:
            sizes = session.scalars(select(TransferBatch.file_count)).all()
        assert sorted(sizes) == [4, 4]
        assert count(a, OutgoingTransfer) == 8
        pump(sites)
        assert count(a, OutgoingTransfer) == 8  # the last two wait for a full batch
        with a.catalogue.session() as session:
            for file in session.scalars(select(File)):
                file.created_at = file.created_at.replace(year=2020)
        pump(sites)  # ... or until the older of them has waited batch_max_wait_seconds
        with a.catalogue.session() as session:
            sizes = session.scalars(select(TransferBatch.file_count)).all()
        assert sorted(sizes) == [2, 4, 4]
        assert count(a, RemoteInstance) == 10
        assert len(sent_items(a)) == len(set(sent_items(a))) == 10


def test_a_short_batch_goes_once_its_oldest_book_has_waited(tmp_path: Path) -> None:
    with clone_sites(
        tmp_path, ["site-a", "site-b"], batch_min=64, batch_max_wait_seconds=3600
    ) as sites:
        befriend_both(sites["site-a"], sites["site-b"])
        a = sites["site-a"]
        upload(a, tmp_path, 3)
        step_sender(a, sites)
        assert count(a, TransferBatch) == 0
        with a.catalogue.session() as session:
            for file in session.scalars(select(File)):
                file.created_at = file.created_at.replace(year=2020)
        step_sender(a, sites)
        with a.catalogue.session() as session:
            assert session.scalars(select(TransferBatch.file_count)).all() == [3]
