"""End to end on real processes: `librarian serve` (API + Dagster webserver + daemon), the
client uploads, Dagster runs ingest the books, and the store, catalogue and partitions agree.

Runs on SQLite (catalogue and Dagster storage) and on PostgreSQL (catalogue, plus Dagster's
storage through dagster-postgres, each in a database of its own that is dropped afterwards).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import pytest
from sqlalchemy import create_engine, text

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.client import LibrarianClient, LibrarianError
from librarian_dagster.jobs.names import API_EXECUTOR, BOOKS_PARTITIONS, EXECUTOR_TAG
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.movers.copy import copy_and_hash
from tests.conftest import POSTGRES_URL
from tests.ingest_helpers import make_book
from tests.live import ADMIN_PASSWORD, LiveLibrarian

pytestmark = pytest.mark.live

ADMIN = ("admin", ADMIN_PASSWORD)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test server; yields its plain postgresql:// URL."""
    name = f"lib_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    params=["sqlite", "sqlite-queue", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveLibrarian]:
    """A live librarian; ``sqlite-queue`` sends the runs asked for at commit to the run queue."""
    with contextlib.ExitStack() as stack:
        live = LiveLibrarian(tmp_path / "site")
        live.directory.mkdir()
        if request.param == "sqlite-queue":
            live.extra_config = ["[ingest]", 'commit_runs = "queue"']
        if request.param == "postgresql":
            live.database_url = stack.enter_context(postgres_database()).replace(
                "postgresql://", "postgresql+psycopg://"
            )
            live.dagster_postgres_url = stack.enter_context(postgres_database())
        live.start()
        try:
            yield live
        finally:
            live.stop()


def make_user(site: LiveLibrarian, name: str, level: str) -> LibrarianClient:
    response = httpx.post(
        f"{site.api_url}/api/v2/users",
        json={"name": name, "password": "password-" + name, "level": level},
        auth=ADMIN,
    )
    assert response.status_code == 201, response.text
    return LibrarianClient(site.api_url, name, "password-" + name)


def test_upload_file_and_directory_through_dagster(site: LiveLibrarian, tmp_path: Path) -> None:
    client = make_user(site, "alice", "read_append")
    single = tmp_path / "single.dat"
    single.write_bytes(os.urandom(2 * 1024 * 1024 + 11))
    book = make_book(tmp_path, "book", files=4)
    stored_file = client.upload(single, "2026/11/25/single.dat", timeout=180)
    stored_dir = client.upload(book, "2026/11/25/book_0001", transfer="http", timeout=180)
    for info, source in ((stored_file, single), (stored_dir, book)):
        assert info.status == "stored", info
        assert info.checksum == str(hash_path(source))
        located = client.get_file(info.name)
        (instance,) = located.instances
        path = Path(instance.path)
        assert hash_path(path) == hash_path(source)
        assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    names = [f.name for f in client.search_files(name="2026/11/25/*")]
    assert names == ["2026/11/25/single.dat", "2026/11/25/book_0001"]
    with site.dagster_instance() as instance:
        partitions = set(instance.get_dynamic_partitions(BOOKS_PARTITIONS))
        assert partitions == {"2026/11/25/single.dat", "2026/11/25/book_0001"}
        assert instance.get_materialized_partitions(BOOK_KEY) == partitions
        # upload() returns once the catalogue says stored; the run ends a moment later.
        site.wait_until(
            lambda: all(
                run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
                for run in instance.get_runs(dg.RunsFilter(job_name="ingest_books"))
            ),
            60,
            "the ingest runs to end",
        )
        runs = instance.get_runs(dg.RunsFilter(job_name="ingest_books"))
        assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        # Where the runs asked for at commit executed: in the API process, or a run worker.
        in_api = site.extra_config != ["[ingest]", 'commit_runs = "queue"']
        assert all((run.tags.get(EXECUTOR_TAG) == API_EXECUTOR) == in_api for run in runs)


def test_bad_uploads_leave_nothing_behind(site: LiveLibrarian, tmp_path: Path) -> None:
    client = make_user(site, "bob", "read_append")
    reader = make_user(site, "carol", "read_only")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(4096))

    # Wrong checksum: the run fails the upload with a reason; nothing is catalogued.
    staged = client.request("POST", "/uploads", json={"name": "bad/checksum", "size": 4096}).json()
    Path(staged["staging_path"]).write_bytes(source.read_bytes())
    client.request(
        "POST", f"/uploads/{staged['upload_id']}/commit", json={"checksum": "xxh3_128:" + "0" * 32}
    )
    site.wait_until(
        lambda: client.get_upload(staged["upload_id"]).status == "failed", 120, "the failed ingest"
    )
    assert "checksum mismatch" in (client.get_upload(staged["upload_id"]).failure_reason or "")
    assert not Path(staged["staging_path"]).exists()

    with pytest.raises(LibrarianError) as forbidden:
        reader.upload(source, "read/only/attempt")
    assert forbidden.value.status == 403
    with pytest.raises(LibrarianError, match="invalid name"):
        client.upload(source, "../escape")  # refused by the client before any request
    with pytest.raises(LibrarianError) as invalid:
        client.request("POST", "/uploads", json={"name": "../escape", "size": 4096})
    assert invalid.value.status == 400  # and by the server, for clients that do not check

    assert client.search_files(name="*") == []
    store = site.directory / "stores" / "main" / "store"
    assert not any(store.iterdir())
    with site.dagster_instance() as instance:
        assert instance.get_dynamic_partitions(BOOKS_PARTITIONS) == []
        assert not instance.get_materialized_partitions(BOOK_KEY)


def test_api_killed_during_its_ingest_run_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the API while its in-process run verifies a book: after a restart the run is
    marked failed, the sensor requests a new one, and the book is stored exactly once."""
    live = LiveLibrarian(tmp_path / "site")
    live.directory.mkdir()
    live.start()
    try:
        client = make_user(live, "dave", "read_append")
        # Many small files: verifying and sealing take long enough to be caught mid-way.
        book = tmp_path / "slow-book"
        for i in range(20_000):
            path = book / f"d{i % 50:02d}" / f"f{i:05d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(i.to_bytes(4, "big") * 25)
        info = client.request(
            "POST", "/uploads", json={"name": "crash/book", "size": 20_000 * 100}
        ).json()
        checksum = copy_and_hash(book, info["staging_path"], client.algorithm, fsync=False)
        client.request(
            "POST", f"/uploads/{info['upload_id']}/commit", json={"checksum": str(checksum)}
        )
        deadline = time.monotonic() + 60
        while client.get_upload(info["upload_id"]).status != "verifying":
            assert time.monotonic() < deadline, "the run never claimed the upload"
            time.sleep(0.02)
        os.kill(live.child_pids()["api"], signal.SIGKILL)
        assert live.process is not None
        assert live.process.wait(timeout=60) == 3  # serve stops when its API dies
    finally:
        live.stop()

    live.start()  # the same site, as an operator would restart it
    try:
        live.wait_until(
            lambda: client.get_upload(info["upload_id"]).status == "stored", 180, "recovery"
        )
        (instance_info,) = client.get_file("crash/book").instances
        assert hash_path(Path(instance_info.path)) == checksum == hash_path(book)
        with live.dagster_instance() as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="ingest_books"))
            killed = [run for run in runs if run.tags.get(EXECUTOR_TAG) == API_EXECUTOR]
            assert [run.status for run in killed] == [dg.DagsterRunStatus.FAILURE]
            assert any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
            assert instance.get_materialized_partitions(BOOK_KEY) == {"crash/book"}
        store = live.directory / "stores" / "main"
        assert [p.name for p in (store / "store").iterdir()] == ["crash"]
        assert not any((store / "staging").iterdir())
    finally:
        live.stop()
