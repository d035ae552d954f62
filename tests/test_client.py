"""LibrarianClient against a real HTTP server (uvicorn in a thread, inline ingest)."""

from __future__ import annotations

import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import File, IncomingTransfer
from librarian_dagster.client import (
    ConnectionFailed,
    ConnectionInfo,
    LibrarianClient,
    LibrarianError,
    UploadFailed,
    UploadFailure,
)
from librarian_dagster.client import uploads as client_module
from librarian_dagster.client.transfer import TarBody, scan_book
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferStatus, UserLevel
from librarian_dagster.storage.checksums import Checksum, UnsupportedEntryError, hash_path
from librarian_dagster.wire import UploadInfo
from tests.api_helpers import PASSWORD, api_client, credentials
from tests.client_helpers import (
    MiB,
    RunningLibrarian,
    count,
    make_file,
    make_tree,
    running_librarian,
)
from tests.conftest import free_port


@pytest.fixture
def librarian_any_db(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> Iterator[RunningLibrarian]:
    with running_librarian(make_settings(database_url)) as running:
        yield running


@pytest.fixture
def client(librarian: RunningLibrarian) -> Iterator[LibrarianClient]:
    with librarian.client() as client:
        yield client


class RequestLog:
    """Records (method, path) of every request a client sends."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append((request.method, request.url.path))

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p in self.requests if m == method and path_part in p)


def logged_client(librarian: RunningLibrarian, log: RequestLog) -> LibrarianClient:
    user, password = credentials(UserLevel.READ_APPEND)
    http = httpx.Client(event_hooks={"request": [log]}, timeout=30)
    return LibrarianClient(librarian.url, user, password, http_client=http)


def assert_read_only(path: Path) -> None:
    entries = [path] if path.is_file() else [path, *path.rglob("*")]
    for entry in entries:
        assert stat.S_IMODE(entry.lstat().st_mode) & 0o222 == 0, entry


def assert_stored(client: LibrarianClient, info: UploadInfo, local: Path) -> Path:
    """The upload is stored, catalogued with one verified, read-only, correct copy."""
    assert info.status == TransferStatus.STORED
    assert info.checksum is not None
    expected = hash_path(local)
    assert Checksum.parse(info.checksum) == expected
    located = client.get_file(info.name)
    assert located.checksum == info.checksum
    assert located.is_directory == local.is_dir()
    assert len(located.instances) == 1
    instance = located.instances[0]
    assert instance.store == "main" and instance.available and instance.verified_at is not None
    stored = Path(instance.path)
    assert stored.exists()
    assert_read_only(stored)
    assert hash_path(stored) == expected
    return stored


# -- uploads ------------------------------------------------------------------------------


def test_upload_file_over_shared_filesystem(
    librarian_any_db: RunningLibrarian, tmp_path: Path
) -> None:
    local = make_file(tmp_path / "src" / "frame.dat", 3 * MiB + 7)
    seen: list[int] = []
    log = RequestLog()
    with logged_client(librarian_any_db, log) as client:
        info = client.upload(local, Path("2026/11/25/frame.dat"), progress=seen.append)
        assert info.name == "2026/11/25/frame.dat" and info.size == local.stat().st_size
        assert_stored(client, info, local)
    assert sum(seen) == local.stat().st_size
    assert log.count("PUT", "/content") == 0  # auto chose the shared filesystem


@pytest.mark.parametrize("transfer", ["local", "http"])
def test_upload_nested_directory(
    client: LibrarianClient, tmp_path: Path, transfer: client_module.Transfer
) -> None:
    local = make_tree(tmp_path / "book")
    info = client.upload(local, f"books/{transfer}", transfer=transfer)
    stored = assert_stored(client, info, local)
    assert (stored / "empty-dir").is_dir()
    assert (stored / "résumé-ü.txt").read_text() == "unicode name"
    assert info.size == sum(p.stat().st_size for p in local.rglob("*") if p.is_file())


def test_upload_file_over_http(librarian: RunningLibrarian, tmp_path: Path) -> None:
    local = make_file(tmp_path / "f.bin", 2 * MiB + 1)
    log = RequestLog()
    with logged_client(librarian, log) as client:
        info = client.upload(local, "http/f.bin", transfer="http")
        assert_stored(client, info, local)
    assert log.count("PUT", "/content") == 1


def test_auto_streams_when_staging_is_not_reachable(
    librarian: RunningLibrarian, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = make_tree(tmp_path / "book")
    log = RequestLog()
    with logged_client(librarian, log) as client:
        # Reachable but owned by another user: ingest could not seal our copy, so stream.
        monkeypatch.setattr(client_module, "_ours", lambda path: False)
        assert_stored(client, client.upload(local, "auto/not-ours"), local)
        assert log.count("PUT", "/content") == 1
        # Not reachable at all.
        monkeypatch.setattr(client_module, "_writable_dir", lambda path: False)
        assert_stored(client, client.upload(local, "auto/unreachable"), local)
        assert log.count("PUT", "/content") == 2
        with pytest.raises(LibrarianError, match="not writable from here"):
            client.upload(local, "auto/forced-local", transfer="local")
    assert log.count("PUT", "/content") == 2
    assert log.count("DELETE", "/uploads/") == 1  # the refused upload was cancelled


def test_upload_without_waiting(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    info = client.upload(make_file(tmp_path / "f"), "nowait/f", wait=False)
    assert info.status == TransferStatus.STAGED
    deadline = time.monotonic() + 30
    while client.get_upload(info.upload_id).status != TransferStatus.STORED:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_upload_resumes_a_pending_upload_and_replaces_partial_data(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    local = make_file(tmp_path / "f", 5000)
    user, password = credentials(UserLevel.READ_APPEND)
    staged = httpx.post(
        f"{librarian.url}/api/v2/uploads",
        json={"name": "resume/f", "size": 5000},
        auth=(user, password),
    )
    assert staged.status_code == 201
    staging_path = Path(staged.json()["staging_path"])
    staging_path.write_bytes(b"half a copy from a crashed client")
    info = client.upload(local, "resume/f", transfer="local")
    assert info.upload_id == staged.json()["upload_id"]
    assert_stored(client, info, local)


# -- refusals change nothing ---------------------------------------------------------------


def test_existing_name_is_a_conflict_and_changes_nothing(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    first = make_file(tmp_path / "a", 10)
    client.upload(first, "dup/name")
    store_root = librarian.settings.stores[0].root
    before = (
        count(librarian, File),
        count(librarian, IncomingTransfer),
        sorted(store_root.rglob("*")),
    )
    with pytest.raises(LibrarianError) as caught:
        client.upload(make_file(tmp_path / "b", 20), "dup/name")
    assert caught.value.status == 409
    assert "already catalogued" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.problem is not None and caught.value.problem.status == 409
    after = (
        count(librarian, File),
        count(librarian, IncomingTransfer),
        sorted(store_root.rglob("*")),
    )
    assert after == before
    assert hash_path(client.get_file("dup/name").instances[0].path) == hash_path(first)


def test_wrong_password_is_401(librarian: RunningLibrarian, tmp_path: Path) -> None:
    user, _ = credentials(UserLevel.READ_APPEND)
    client = LibrarianClient(librarian.url, user, "not-the-password")
    with client, pytest.raises(LibrarianError) as caught:
        client.upload(make_file(tmp_path / "f"), "auth/f")
    assert caught.value.status == 401
    assert "wrong user name or password" in str(caught.value)
    assert user in str(caught.value) and PASSWORD not in str(caught.value)
    assert count(librarian, IncomingTransfer) == 0


def test_read_only_user_cannot_upload(librarian: RunningLibrarian, tmp_path: Path) -> None:
    with librarian.client(UserLevel.READ_ONLY) as client:
        with pytest.raises(LibrarianError) as caught:
            client.upload(make_file(tmp_path / "f"), "auth/f")
        assert caught.value.status == 403
        assert "read_append" in caught.value.detail
        assert client.search_files() == []  # but it may read
    assert count(librarian, IncomingTransfer) == 0


@pytest.mark.parametrize("transfer", ["local", "http"])
def test_symlink_inside_a_book_is_refused_before_staging(
    librarian: RunningLibrarian,
    client: LibrarianClient,
    tmp_path: Path,
    transfer: client_module.Transfer,
) -> None:
    book = make_tree(tmp_path / "book")
    (book / "raw" / "link").symlink_to(book / "raw" / "notes.txt")
    with pytest.raises(LibrarianError, match="symlink") as caught:
        client.upload(book, "links/book", transfer=transfer)
    assert isinstance(caught.value.__cause__, UnsupportedEntryError)
    assert count(librarian, IncomingTransfer) == 0


def test_bad_local_input_is_refused_before_staging(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    local = make_file(tmp_path / "f")
    with pytest.raises(LibrarianError, match="invalid name"):
        client.upload(local, "../escape")
    with pytest.raises(LibrarianError, match="no such file"):
        client.upload(tmp_path / "missing", "x/missing")
    with pytest.raises(LibrarianError, match="given twice"):
        client.upload_many([(local, "twice/a"), (local, "twice/a")])
    assert count(librarian, IncomingTransfer) == 0


def test_ingest_failure_raises_the_servers_reason(
    librarian: RunningLibrarian,
    client: LibrarianClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = Checksum("xxh3_128", "0" * 32)
    real = client_module.copy_and_hash

    def lying_copy(*args: object, **kwargs: object) -> Checksum:
        real(*args, **kwargs)  # type: ignore[arg-type]
        return wrong

    monkeypatch.setattr(client_module, "copy_and_hash", lying_copy)
    with pytest.raises(UploadFailed) as caught:
        client.upload(make_file(tmp_path / "f"), "corrupt/f", transfer="local")
    assert "checksum mismatch" in caught.value.reason
    assert caught.value.failures[0].name == "corrupt/f"
    assert count(librarian, File) == 0


def test_a_failed_local_copy_cancels_the_upload(
    librarian: RunningLibrarian,
    client: LibrarianClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_copy(src: Path, dst: Path, *args: object, **kwargs: object) -> Checksum:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(client_module, "copy_and_hash", broken_copy)
    with pytest.raises(LibrarianError, match="No space left"):
        client.upload(make_file(tmp_path / "f"), "broken/f", transfer="local")
    with librarian.catalogue.session() as session:
        transfer = session.scalars(select(IncomingTransfer)).one()
        assert transfer.status == TransferStatus.CANCELLED
        assert not Path(transfer.staging_path).parent.exists()


def test_a_book_changing_during_an_http_upload_cancels_it(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    local = make_file(tmp_path / "f", 3 * MiB)

    def shrink(_n: int) -> None:
        os.truncate(local, MiB + 5)

    with pytest.raises(LibrarianError, match="shrank while it was being uploaded"):
        client.upload(local, "changing/f", transfer="http", progress=shrink)
    with librarian.catalogue.session() as session:
        transfer = session.scalars(select(IncomingTransfer)).one()
        assert transfer.status == TransferStatus.CANCELLED
        staging_dir = Path(transfer.staging_path).parent
    deadline = time.monotonic() + 10
    while staging_dir.exists():  # the server's PUT handler may still be unwinding
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert count(librarian, File) == 0


def test_unreachable_server_is_one_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with LibrarianClient(url, "u", "p") as client, pytest.raises(ConnectionFailed) as caught:
        client.ping()
    assert str(caught.value).startswith(f"cannot reach {url}: ")
    assert caught.value.status is None


# -- many uploads -----------------------------------------------------------------------------


def test_upload_many(librarian: RunningLibrarian, tmp_path: Path) -> None:
    pairs: list[tuple[Path, str]] = [
        (make_file(tmp_path / "src" / f"f{i:02d}", 100 + i), f"many/f{i:02d}") for i in range(19)
    ]
    pairs.append((make_tree(tmp_path / "tree"), "many/tree"))
    log = RequestLog()
    waits: list[tuple[int, int]] = []
    with logged_client(librarian, log) as client:
        infos = client.upload_many(pairs, on_wait=lambda done, total: waits.append((done, total)))
        assert [info.name for info in infos] == [name for _, name in pairs]
        for (local, _), info in zip(pairs, infos, strict=True):
            assert_stored(client, info, local)
    assert log.count("POST", "/uploads/status") >= 1
    assert log.count("GET", "/uploads/") == 0  # waited on all at once
    assert waits[-1] == (20, 20)


def test_upload_many_reports_every_failure_and_stores_the_rest(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    client.upload(make_file(tmp_path / "taken"), "partial/taken")
    pairs = [
        (make_file(tmp_path / "a"), "partial/a"),
        (make_file(tmp_path / "b"), "partial/taken"),
        (make_file(tmp_path / "c"), "partial/c"),
    ]
    with pytest.raises(UploadFailed) as caught:
        client.upload_many(pairs)
    error = caught.value
    assert [failure.name for failure in error.failures] == ["partial/taken"]
    assert error.failures[0].status == 409 and error.status == 409
    assert [info.name for info in error.stored] == ["partial/a", "partial/c"]
    assert "partial/taken" in str(error) and "already catalogued" in str(error)
    assert {f.name for f in client.search_files(name="partial/*")} == {
        "partial/a",
        "partial/c",
        "partial/taken",
    }


def test_upload_many_stops_at_once_on_auth_errors(
    librarian: RunningLibrarian, tmp_path: Path
) -> None:
    pairs = [(make_file(tmp_path / f"f{i}"), f"stop/f{i}") for i in range(3)]
    with librarian.client(UserLevel.READ_ONLY) as client, pytest.raises(LibrarianError) as caught:
        client.upload_many(pairs)
    assert caught.value.status == 403 and not isinstance(caught.value, UploadFailed)
    assert count(librarian, IncomingTransfer) == 0


def test_upload_failed_message_stays_short() -> None:
    failures = [UploadFailure(f"n{i}", "no room") for i in range(30)]
    message = str(UploadFailed(failures))
    assert message.startswith("30 of 30 uploads failed: 'n0': no room;")
    assert message.endswith("and 20 more") and "\n" not in message


# -- reading ------------------------------------------------------------------------------------


def test_search_with_glob_and_paging(librarian_any_db: RunningLibrarian, tmp_path: Path) -> None:
    pairs = [(make_file(tmp_path / f"p{i}"), f"pages/p{i}") for i in range(7)]
    pairs += [(make_file(tmp_path / "o1"), "other/o1"), (make_file(tmp_path / "o_"), "pages_x")]
    log = RequestLog()
    with logged_client(librarian_any_db, log) as client:
        client.upload_many(pairs, transfer="http")
        log.requests.clear()

        first_five = client.search_files(name="pages/*", limit=5, page_size=2)
        assert [f.name for f in first_five] == [f"pages/p{i}" for i in range(5)]
        assert log.count("GET", "/files") == 3

        every = list(client.iter_files(name="pages/*", page_size=3))
        names = [f.name for f in every]
        assert names == [f"pages/p{i}" for i in range(7)] and len(set(names)) == 7

        assert [f.name for f in client.search_files(name="pages/p?", limit=100)] == names
        assert client.search_files(name="pages_x")[0].name == "pages_x"  # _ is literal
        assert len(client.search_files(uploader=credentials(UserLevel.READ_APPEND)[0])) == 9
        assert client.search_files(source="elsewhere") == []
        assert client.search_files(created_since=datetime.now(UTC) + timedelta(hours=1)) == []
        naive_past = datetime.now() - timedelta(hours=1)  # naive: taken as local time
        assert len(client.search_files(created_since=naive_past, limit=1000)) == 9


def test_get_file_and_missing_file(client: LibrarianClient, tmp_path: Path) -> None:
    local = make_file(tmp_path / "x")
    client.upload(local, "where/is #1?")  # characters that need quoting in a URL path
    located = client.get_file(Path("where/is #1?"))
    assert located.name == "where/is #1?" and located.remote_instances == []
    assert located.uploader == credentials(UserLevel.READ_APPEND)[0]
    with pytest.raises(LibrarianError) as caught:
        client.get_file("where/nothing")
    assert caught.value.status == 404 and "no file named" in caught.value.detail


def test_ping_and_from_info(librarian: RunningLibrarian, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = credentials(UserLevel.READ_ONLY)
    monkeypatch.setenv("TEST_LIBRARIAN_PW", password)
    info = ConnectionInfo(url=librarian.url, user=user, password_env="TEST_LIBRARIAN_PW")
    with LibrarianClient.from_info(info) as client:
        pong = client.ping()
        assert pong.name == "test-site" and pong.healthy
        assert client.search_files() == []
    assert password not in repr(client)


# -- the HTTP tar stream ---------------------------------------------------------------------


def test_tar_body_is_a_valid_tar_with_the_hash_path_checksum(tmp_path: Path) -> None:
    book = make_tree(tmp_path / "book")
    body = TarBody(scan_book(book), "xxh3_128", None)
    archive_path = tmp_path / "book.tar"
    archive_path.write_bytes(b"".join(body))
    assert archive_path.stat().st_size % tarfile.RECORDSIZE == 0
    assert body.checksum() == hash_path(book)
    with tarfile.open(archive_path) as archive:
        names = set(archive.getnames())
        archive.extractall(tmp_path / "out", filter="data")
    assert {"raw", "raw/night1", "empty-dir", "résumé-ü.txt", "long-" * 30 + "name"} <= names
    assert hash_path(tmp_path / "out") == hash_path(book)


# -- other HTTP clients and answers -----------------------------------------------------------


def test_answers_that_are_not_from_a_librarian() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ping"):
            return httpx.Response(200, text="<html>a web page</html>")
        return httpx.Response(502, text="Bad Gateway (nginx)")

    transport = httpx.MockTransport(handler)
    with LibrarianClient("http://proxy", "u", "p", transport=transport) as client:
        with pytest.raises(LibrarianError, match="unexpected answer from http://proxy/api/v2/ping"):
            client.ping()
        with pytest.raises(LibrarianError) as caught:
            client.get_file("x")
    assert caught.value.status == 502 and caught.value.problem is None
    assert str(caught.value) == "Bad Gateway (nginx) (502 Bad Gateway)"


def test_works_over_an_in_process_test_client(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    user, password = credentials(UserLevel.READ_APPEND)
    with api_client(make_settings()) as test_client:
        client = LibrarianClient(str(test_client.base_url), user, password, http_client=test_client)
        assert client.ping().name == "test-site"
        info = client.upload(make_file(tmp_path / "f"), "inproc/f", wait=False, transfer="http")
        assert info.status == TransferStatus.STAGED  # no launcher here: nobody ingests it
        client.cancel_upload(info.upload_id)
        assert client.get_upload(info.upload_id).status == TransferStatus.CANCELLED
        client.close()  # not ours: the test client stays open
        assert client.search_files() == []


def test_upload_many_500_small_files_within_the_benchmark_goal(
    librarian: RunningLibrarian, client: LibrarianClient, tmp_path: Path
) -> None:
    """The client benchmark goal: 500 small files uploaded and stored in at most 40 s."""
    pairs = [
        (make_file(tmp_path / "src" / f"f{i:03d}", 1000), f"bulk/f{i:03d}") for i in range(500)
    ]
    started = time.monotonic()
    infos = client.upload_many(pairs)
    elapsed = time.monotonic() - started
    assert len(infos) == 500 and all(info.status == TransferStatus.STORED for info in infos)
    assert count(librarian, File) == 500
    assert elapsed <= 40, f"500 files took {elapsed:.1f} s"


@pytest.mark.parametrize("transfer", ["local", "http"])
def test_empty_books(
    client: LibrarianClient, tmp_path: Path, transfer: client_module.Transfer
) -> None:
    """An empty file is a book; an empty directory is refused (tests/test_small_truths.py)."""
    empty_file = make_file(tmp_path / "empty", 0)
    (tmp_path / "empty-dir" / "sub").mkdir(parents=True)
    info = client.upload(empty_file, f"empty/{transfer}/empty", transfer=transfer)
    assert info.size == 0
    assert_stored(client, info, empty_file)
    with pytest.raises(LibrarianError, match="empty directory"):
        client.upload(tmp_path / "empty-dir", f"empty/{transfer}/empty-dir", transfer=transfer)


def test_a_429_is_retried_after_its_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too many at once (upload slots, the login throttle) is a wait, not a failure."""
    answers = iter([429, 429, 200])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = next(answers)
        if status == 429:
            return httpx.Response(
                429, headers={"Retry-After": "2"}, json={"title": "t", "status": 429}
            )
        return httpx.Response(200, json={"uploads": []})

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with LibrarianClient("http://x", "u", "p", transport=httpx.MockTransport(handler)) as client:
        client.request("POST", "/uploads/status", json={"upload_ids": [1]})
    assert slept == [2.0, 2.0] and len(seen) == 3


def test_a_429_that_persists_is_an_error_in_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"Retry-After": "999"},
            json={"title": "Too many requests", "status": 429, "detail": "slow down"},
        )

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with (
        LibrarianClient("http://x", "u", "p", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(LibrarianError, match="slow down") as caught,
    ):
        client.request("GET", "/files")
    assert caught.value.status == 429 and slept == [30.0, 30.0, 30.0]
