"""LocalStore: atomic, no-overwrite commits; nothing escapes the root; nothing half-written shows.

Tests run as root here, so none of them relies on EACCES; the unprivileged
behaviour is checked in a forked child that drops to ``nobody``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import shutil
import stat
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

from librarian_dagster.storage import posix, sealing
from librarian_dagster.storage.errors import (
    AlreadyStoredError,
    NameConflictError,
    PathEscapeError,
    StagingNotFoundError,
    StoreError,
    StoreFullError,
    UnsafeEntryError,
)
from librarian_dagster.storage.local_store import (
    LeftoverStaging,
    LocalStore,
    StagedData,
    StoreHealth,
)
from librarian_dagster.storage.names import InvalidNameError

Snapshot = dict[str, tuple[object, ...]]

BOOK_TREE = {
    "top.txt": b"top level",
    "sub/inner.bin": bytes(range(256)) * 64,
    "sub/deeper/leaf.txt": b"leaf",
    "sub/empty_dir/": b"",
    "zero": b"",
}

ESCAPING_NAMES = ["../x", "/etc/x", "a/../../x", "a\0b", "x" * 300]


# -- helpers -------------------------------------------------------------------------


def snapshot(top: Path) -> Snapshot:
    """Every path below ``top`` with its type, mode, inode and content (never following links)."""
    result: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                content: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(status.st_mode):
                content = os.readlink(path)
            else:
                content = None
            result[path.relative_to(top).as_posix()] = (status.st_mode, status.st_ino, content)
    return result


def write_tree(top: Path, spec: dict[str, bytes]) -> None:
    """Create files (and "dir/" entries as empty directories) below ``top``."""
    top.mkdir(parents=True, exist_ok=True)
    for relative, content in spec.items():
        path = top / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def read_tree(top: Path) -> dict[str, bytes]:
    """Inverse of :func:`write_tree`, to compare contents after a move."""
    result: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames:
            path = Path(dirpath, name)
            result[path.relative_to(top).as_posix()] = path.read_bytes()
        for name in dirnames:
            path = Path(dirpath, name)
            if not any(path.iterdir()):
                result[path.relative_to(top).as_posix() + "/"] = b""
    return result


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def staged_book(store: LocalStore, name: str, spec: dict[str, bytes] | None = None) -> StagedData:
    """Stage ``name`` and upload a directory book (or a file book when ``spec`` is None)."""
    staged = store.stage(name, 1024)
    if spec is None:
        staged.data_path.write_bytes(b"file book content")
    else:
        write_tree(staged.data_path, spec)
    return staged


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    local = LocalStore("test-store", tmp_path / "root", reserve_bytes=0)
    local.ensure_layout()
    return local


# -- layout and staging --------------------------------------------------------------


def test_ensure_layout_creates_both_areas_idempotently(tmp_path: Path) -> None:
    local = LocalStore("s", tmp_path / "deep" / "root", reserve_bytes=0)
    local.ensure_layout()
    local.ensure_layout()
    assert mode_of(local.staging_dir) == 0o755
    assert mode_of(local.store_dir) == 0o755
    assert sorted(os.listdir(local.root)) == ["staging", "store"]


def test_ensure_layout_refuses_a_symlinked_area(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "store").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PathEscapeError):
        LocalStore("s", root, reserve_bytes=0).ensure_layout()


def test_stage_creates_a_private_uuid_directory(store: LocalStore) -> None:
    staged = store.stage("2026/11/25/book_0001", 10)
    assert len(staged.staging_id) == 32
    int(staged.staging_id, 16)
    assert staged.directory == store.staging_dir / staged.staging_id
    assert staged.directory.is_dir()
    assert mode_of(staged.directory) == 0o770
    assert staged.data_path == staged.directory / "book_0001"
    assert not staged.data_path.exists()


def test_stage_refuses_bad_names_before_creating_anything(store: LocalStore) -> None:
    for name in ESCAPING_NAMES:
        with pytest.raises(InvalidNameError):
            store.stage(name, 1)
    assert os.listdir(store.staging_dir) == []


def test_staged_rederives_an_existing_upload(store: LocalStore) -> None:
    staged = store.stage("a/b/book", 1)
    assert store.staged(staged.staging_id, "a/b/book") == staged


BAD_STAGING_IDS = [
    "../../etc",
    "..",
    "",
    "ABCDEF0123456789ABCDEF0123456789",
    "12345678-1234-1234-1234-123456789abc",
    "0" * 31,
    "0" * 33,
    "0" * 31 + "/",
    "0" * 32 + "\n",
]


@pytest.mark.parametrize("staging_id", BAD_STAGING_IDS)
def test_staged_refuses_anything_but_a_uuid_hex(store: LocalStore, staging_id: str) -> None:
    with pytest.raises(PathEscapeError):
        store.staged(staging_id, "book")
    with pytest.raises(PathEscapeError):
        store.discard_staging(staging_id)


def test_staged_reports_a_missing_upload(store: LocalStore) -> None:
    with pytest.raises(StagingNotFoundError):
        store.staged("0" * 32, "book")


# -- committing ----------------------------------------------------------------------


def test_commit_of_a_file_is_a_rename(store: LocalStore) -> None:
    staged = staged_book(store, "2026/11/25/book_0001")
    inode = os.lstat(staged.data_path).st_ino

    final = store.commit(staged, "2026/11/25/book_0001")

    assert final == store.store_dir / "2026" / "11" / "25" / "book_0001"
    assert os.lstat(final).st_ino == inode
    assert final.read_bytes() == b"file book content"
    assert mode_of(final) == 0o444
    assert mode_of(final.parent) == 0o755
    assert not staged.directory.exists()
    assert os.listdir(store.staging_dir) == []
    assert store.exists("2026/11/25/book_0001")


def test_commit_of_a_nested_directory_is_a_rename(store: LocalStore) -> None:
    staged = staged_book(store, "2026/11/25/dirbook", BOOK_TREE)
    inodes = {
        relative: os.lstat(staged.data_path / relative.rstrip("/")).st_ino for relative in BOOK_TREE
    }
    top_inode = os.lstat(staged.data_path).st_ino

    final = store.commit(staged, "2026/11/25/dirbook")

    assert os.lstat(final).st_ino == top_inode
    for relative, inode in inodes.items():
        assert os.lstat(final / relative.rstrip("/")).st_ino == inode
    assert read_tree(final) == BOOK_TREE
    for dirpath, _dirnames, filenames in os.walk(final):
        assert mode_of(Path(dirpath)) == 0o555
        for name in filenames:
            assert mode_of(Path(dirpath, name)) == 0o444
    assert not staged.directory.exists()


def test_commit_may_rename_the_book(store: LocalStore) -> None:
    staged = staged_book(store, "upload")
    final = store.commit(staged, "renamed/book")
    assert final.read_bytes() == b"file book content"
    assert not store.exists("upload")


def test_commit_of_empty_file_and_empty_directory(store: LocalStore) -> None:
    file_staged = store.stage("empty_file", 0)
    file_staged.data_path.touch()
    dir_staged = store.stage("empty_dir", 0)
    dir_staged.data_path.mkdir()
    assert store.commit(file_staged, "empty_file").read_bytes() == b""
    final_dir = store.commit(dir_staged, "empty_dir")
    assert list(final_dir.iterdir()) == []
    assert mode_of(final_dir) == 0o555


def test_commit_seals_files_in_two_passes(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file is write-protected and kicked before the first file fsync; all are fsynced."""
    staged = staged_book(store, "twopass", BOOK_TREE)
    files = {
        os.lstat(staged.data_path / relative).st_ino
        for relative in BOOK_TREE
        if not relative.endswith("/")
    }
    events: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def kick(fd: int, offset: int = 0, length: int = 0) -> None:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o444  # chmod came first
        events.append(("kick", os.fstat(fd).st_ino))

    def fsync(fd: int) -> None:
        status = os.fstat(fd)
        if stat.S_ISREG(status.st_mode):
            events.append(("fsync", status.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(posix, "start_writeback", kick)
    monkeypatch.setattr(os, "fsync", fsync)
    store.commit(staged, "twopass")

    kicks = [inode for what, inode in events if what == "kick"]
    fsyncs = [inode for what, inode in events if what == "fsync"]
    assert sorted(kicks) == sorted(fsyncs) == sorted(files)
    assert [what for what, _ in events] == ["kick"] * len(files) + ["fsync"] * len(files)


def test_file_swapped_after_the_scan_is_refused_when_sealing_reaches_it(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealing opens each file and checks it is the inode scanned before it trusts it."""
    staged = staged_book(store, "swapped", {"a": b"scanned", "b": b"other"})
    real_kick = posix.start_writeback
    kicked: list[int] = []

    def kick_then_swap(fd: int, offset: int = 0, length: int = 0) -> None:
        real_kick(fd, offset, length)
        kicked.append(fd)
        if len(kicked) == 1:  # "a" is sealed; replace "b", not opened yet, by a new inode
            (staged.data_path / "b.new").write_bytes(b"swapped in")
            os.replace(staged.data_path / "b.new", staged.data_path / "b")

    monkeypatch.setattr(posix, "start_writeback", kick_then_swap)
    with pytest.raises(UnsafeEntryError, match="changed while being committed"):
        store.commit(staged, "swapped")
    assert not store.exists("swapped")
    assert (staged.data_path / "b").read_bytes() == b"swapped in"


def test_sealing_fsyncs_each_file_on_the_descriptor_that_started_its_writeback(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writeback error is reported to the fsync of the same open file: no re-open between."""
    staged = staged_book(store, "batched", {f"f{i:03d}": b"x" for i in range(7)})
    monkeypatch.setattr(sealing, "SEAL_BATCH", 3)
    events: list[tuple[str, int]] = []
    real_kick, real_fsync = posix.start_writeback, os.fsync

    def kick(fd: int, offset: int = 0, length: int = 0) -> None:
        events.append(("kick", fd))
        real_kick(fd, offset, length)

    def fsync(fd: int) -> None:
        events.append(("fsync", fd))
        real_fsync(fd)

    monkeypatch.setattr(posix, "start_writeback", kick)
    monkeypatch.setattr(os, "fsync", fsync)
    store.commit(staged, "batched")
    file_events = events[: 2 * 7]
    kinds = [kind for kind, _ in file_events]
    assert kinds == ["kick"] * 3 + ["fsync"] * 3 + ["kick"] * 3 + ["fsync"] * 3 + ["kick", "fsync"]
    for first in (0, 6, 12):  # each batch fsyncs exactly the descriptors it kicked
        batch = file_events[first : first + (6 if first < 12 else 2)]
        half = len(batch) // 2
        assert [fd for _, fd in batch[:half]] == [fd for _, fd in batch[half:]]


def test_commit_without_uploaded_data_is_refused(store: LocalStore) -> None:
    staged = store.stage("book", 1)
    with pytest.raises(StagingNotFoundError):
        store.commit(staged, "book")
    assert staged.directory.is_dir()


def test_commit_of_a_discarded_upload_is_refused(store: LocalStore) -> None:
    staged = staged_book(store, "book")
    store.discard_staging(staged.staging_id)
    with pytest.raises(StagingNotFoundError):
        store.commit(staged, "book")


def test_rename_primitive_is_available_on_linux() -> None:
    if sys.platform.startswith("linux"):
        assert posix._renameat2() is not None


# -- path escapes --------------------------------------------------------------------


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_escaping_names_are_refused_everywhere_and_change_nothing(
    tmp_path: Path, store: LocalStore, name: str
) -> None:
    staged = staged_book(store, "book", BOOK_TREE)
    before = snapshot(tmp_path)

    with pytest.raises(InvalidNameError):
        store.commit(staged, name)
    with pytest.raises(InvalidNameError):
        store.path_for(name)
    with pytest.raises(InvalidNameError):
        store.exists(name)
    with pytest.raises(InvalidNameError):
        store.delete(name)
    with pytest.raises(InvalidNameError):
        store.staged(staged.staging_id, name)
    with pytest.raises(InvalidNameError):
        store.stage(name, 1)

    assert snapshot(tmp_path) == before


def test_forged_staged_data_outside_staging_is_refused(tmp_path: Path, store: LocalStore) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    staged = store.stage("book", 1)
    forgeries = [
        StagedData(staged.staging_id, tmp_path, victim),
        StagedData(staged.staging_id, staged.directory, victim),
        StagedData("../../" + staged.staging_id, staged.directory, staged.data_path),
        StagedData(staged.staging_id, staged.directory, staged.directory / ".."),
    ]
    before = snapshot(tmp_path)
    for forged in forgeries:
        with pytest.raises(PathEscapeError):
            store.commit(forged, "book")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc", "dangling-nowhere"])
def test_symlink_inside_staged_data_is_refused(
    tmp_path: Path, store: LocalStore, target: str
) -> None:
    staged = staged_book(store, "book", BOOK_TREE)
    (staged.data_path / "sub" / "link").symlink_to(target)
    before = snapshot(tmp_path)

    with pytest.raises(UnsafeEntryError, match="symlink"):
        store.commit(staged, "book")

    assert snapshot(tmp_path) == before  # store area unchanged, staged data as it was
    assert os.listdir(store.store_dir) == []


def test_symlink_as_the_staged_data_itself_is_refused(tmp_path: Path, store: LocalStore) -> None:
    staged = store.stage("book", 1)
    staged.data_path.symlink_to("/etc/passwd")
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeEntryError):
        store.commit(staged, "book")
    assert snapshot(tmp_path) == before


def test_fifo_inside_staged_data_is_refused(tmp_path: Path, store: LocalStore) -> None:
    staged = staged_book(store, "book", BOOK_TREE)
    os.mkfifo(staged.data_path / "pipe")
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeEntryError, match="fifo"):
        store.commit(staged, "book")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_device_inside_staged_data_is_refused(tmp_path: Path, store: LocalStore) -> None:
    staged = staged_book(store, "book", BOOK_TREE)
    os.mknod(staged.data_path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeEntryError, match="device"):
        store.commit(staged, "book")
    assert snapshot(tmp_path) == before


def test_hard_linked_file_in_staged_data_is_refused(tmp_path: Path, store: LocalStore) -> None:
    outside = tmp_path / "root" / "mutable"
    outside.write_bytes(b"could change later")
    staged = staged_book(store, "book", BOOK_TREE)
    os.link(outside, staged.data_path / "linked")
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeEntryError, match="hard link"):
        store.commit(staged, "book")
    assert snapshot(tmp_path) == before


def test_symlink_planted_in_the_store_area_is_never_followed(
    tmp_path: Path, store: LocalStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.store_dir / "a").symlink_to(outside)
    staged = staged_book(store, "b", BOOK_TREE)
    before = snapshot(tmp_path)

    with pytest.raises(PathEscapeError):
        store.commit(staged, "a/b")
    with pytest.raises(PathEscapeError):
        store.path_for("a/b")
    with pytest.raises(PathEscapeError):
        store.exists("a/b")
    with pytest.raises(PathEscapeError):
        store.delete("a")
    with pytest.raises(PathEscapeError):
        store.path_for("a")

    assert snapshot(tmp_path) == before
    assert list(outside.iterdir()) == []


def test_deeper_planted_symlink_is_refused(tmp_path: Path, store: LocalStore) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.store_dir / "a").mkdir()
    (store.store_dir / "a" / "b").symlink_to(outside)
    staged = staged_book(store, "c")
    before = snapshot(tmp_path)
    with pytest.raises(PathEscapeError):
        store.commit(staged, "a/b/c")
    assert snapshot(tmp_path) == before


def test_symlinked_staging_entry_is_refused(tmp_path: Path, store: LocalStore) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    fake_id = "f" * 32
    (store.staging_dir / fake_id).symlink_to(outside)
    with pytest.raises(PathEscapeError):
        store.staged(fake_id, "keep")
    store.discard_staging(fake_id)  # the link goes, never what it points to
    assert not os.path.lexists(store.staging_dir / fake_id)
    assert (outside / "keep").read_bytes() == b"keep"


# -- no overwrite, atomicity ---------------------------------------------------------


def test_commit_onto_an_existing_name_changes_nothing(tmp_path: Path, store: LocalStore) -> None:
    store.commit(staged_book(store, "book", BOOK_TREE), "book")
    second = staged_book(store, "book", {"other.txt": b"other"})
    before = snapshot(tmp_path)

    with pytest.raises(AlreadyStoredError):
        store.commit(second, "book")

    assert snapshot(tmp_path) == before
    assert read_tree(store.path_for("book")) == BOOK_TREE
    assert read_tree(second.data_path) == {"other.txt": b"other"}


def test_commit_of_a_file_onto_an_existing_file_is_refused(store: LocalStore) -> None:
    store.commit(staged_book(store, "book"), "book")
    second = store.stage("book", 1)
    second.data_path.write_bytes(b"different")
    with pytest.raises(AlreadyStoredError):
        store.commit(second, "book")
    assert store.path_for("book").read_bytes() == b"file book content"
    assert second.data_path.read_bytes() == b"different"


def test_commit_inside_a_stored_book_is_refused(tmp_path: Path, store: LocalStore) -> None:
    store.commit(staged_book(store, "book", BOOK_TREE), "book")
    store.commit(staged_book(store, "filebook"), "filebook")
    before_store = snapshot(store.store_dir)
    for name in ("book/sub/new", "book/new", "filebook/new"):
        with pytest.raises(NameConflictError):
            store.commit(staged_book(store, "new"), name)
    assert snapshot(store.store_dir) == before_store


@pytest.mark.parametrize("is_dir", [False, True])
def test_failed_rename_leaves_no_trace_and_a_retry_succeeds(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, is_dir: bool
) -> None:
    name = "2026/11/25/book"
    staged = staged_book(store, name, BOOK_TREE if is_dir else None)
    content = read_tree(staged.data_path) if is_dir else staged.data_path.read_bytes()
    before_store = snapshot(store.store_dir)

    def broken_rename(source: Path, destination: Path) -> None:
        raise OSError(errno.EIO, "simulated I/O error", str(source))

    with monkeypatch.context() as patch:
        patch.setattr(posix, "rename_noreplace", broken_rename)
        with pytest.raises(OSError, match="simulated"):
            store.commit(staged, name)

    assert snapshot(store.store_dir) == before_store  # not even the parent dirs remain
    assert not store.exists(name)
    assert (read_tree(staged.data_path) if is_dir else staged.data_path.read_bytes()) == content

    final = store.commit(staged, name)
    assert (read_tree(final) if is_dir else final.read_bytes()) == content
    assert not staged.directory.exists()


@pytest.mark.parametrize("is_dir", [False, True])
def test_fallback_without_renameat2_moves_and_refuses_overwrite(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, is_dir: bool
) -> None:
    monkeypatch.setattr(posix, "_renameat2", lambda: None)
    staged = staged_book(store, "book", BOOK_TREE if is_dir else None)
    inode = os.lstat(staged.data_path).st_ino

    final = store.commit(staged, "book")

    assert os.lstat(final).st_ino == inode
    if not is_dir:
        assert os.lstat(final).st_nlink == 1  # link+unlink left no second name behind
    second = staged_book(store, "book", BOOK_TREE if is_dir else None)
    with pytest.raises(AlreadyStoredError):
        store.commit(second, "book")
    assert second.data_path.exists()


@pytest.mark.parametrize("use_fallback", [False, True])
@pytest.mark.parametrize("kind", ["file", "dir", "empty dir"])
def test_rename_primitive_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_fallback: bool, kind: str
) -> None:
    """Even an empty directory, which plain rename(2) would silently replace, is kept."""
    if use_fallback:
        monkeypatch.setattr(posix, "_renameat2", lambda: None)
    source = tmp_path / "source"
    destination = tmp_path / "destination"
    if kind == "file":
        source.write_bytes(b"new")
        destination.write_bytes(b"old")
    else:
        source.mkdir()
        destination.mkdir()
        if kind == "dir":
            (destination / "old").write_bytes(b"old")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError):
        posix.rename_noreplace(source, destination)
    assert snapshot(tmp_path) == before


# -- capacity ------------------------------------------------------------------------


def test_stage_refuses_when_the_reserve_would_be_used(tmp_path: Path) -> None:
    local = LocalStore("full", tmp_path / "root", reserve_bytes=1 << 62)
    local.ensure_layout()
    assert local.free_bytes() == 0
    with pytest.raises(StoreFullError) as caught:
        local.stage("book", 1)
    assert caught.value.needed == 1
    assert caught.value.available == 0
    assert os.listdir(local.staging_dir) == []


def test_stage_refuses_more_than_the_disk_holds(store: LocalStore) -> None:
    with pytest.raises(StoreFullError):
        store.stage("book", 1 << 62)
    assert os.listdir(store.staging_dir) == []


def test_free_bytes_subtracts_the_reserve(tmp_path: Path) -> None:
    plain = LocalStore("a", tmp_path, reserve_bytes=0)
    reserved = LocalStore("b", tmp_path, reserve_bytes=1 << 20)
    difference = plain.free_bytes() - reserved.free_bytes()
    assert abs(difference - (1 << 20)) < (64 << 20)  # other writers may change free space


def test_store_full_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(StoreFullError(10, 3, "s")))
    assert (error.needed, error.available, error.store) == (10, 3, "s")
    assert isinstance(error, StoreError)


# -- deleting and cleaning up --------------------------------------------------------


def test_delete_removes_a_read_only_tree_and_prunes_empty_parents(store: LocalStore) -> None:
    store.commit(staged_book(store, "x", BOOK_TREE), "2026/11/25/book")
    store.commit(staged_book(store, "y"), "2026/11/26/other")

    store.delete("2026/11/25/book")
    assert not (store.store_dir / "2026" / "11" / "25").exists()
    assert (store.store_dir / "2026" / "11" / "26" / "other").exists()

    store.delete("2026/11/26/other")
    assert store.store_dir.is_dir()
    assert os.listdir(store.store_dir) == []


def test_delete_of_a_missing_name_raises(store: LocalStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.delete("nothing/here")


def test_delete_refuses_namespace_dirs_and_parts_of_books(store: LocalStore) -> None:
    store.commit(staged_book(store, "x", BOOK_TREE), "2026/11/book")
    before = snapshot(store.store_dir)
    for name in ("2026", "2026/11", "2026/11/book/sub", "2026/11/book/top.txt"):
        with pytest.raises(NameConflictError):
            store.delete(name)
    assert snapshot(store.store_dir) == before


def test_discard_staging_removes_read_only_content_without_following_links(
    tmp_path: Path, store: LocalStore
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    staged = staged_book(store, "book", BOOK_TREE)
    (staged.data_path / "link").symlink_to(outside)
    for dirpath, _dirnames, filenames in os.walk(staged.data_path):
        for name in filenames:
            os.chmod(Path(dirpath, name), 0o444)
    for dirpath, _dirnames, _filenames in list(os.walk(staged.data_path))[::-1]:
        os.chmod(dirpath, 0o555)
    os.chmod(staged.directory, 0o555)

    store.discard_staging(staged.staging_id)

    assert not staged.directory.exists()
    assert (outside / "keep").read_bytes() == b"keep"
    with pytest.raises(StagingNotFoundError):
        store.discard_staging(staged.staging_id)


def test_leftover_staging_reports_old_uploads_only(store: LocalStore) -> None:
    old = staged_book(store, "old", {"a": b"12345", "d/b": b"678"})
    fresh = staged_book(store, "fresh", {"a": b"1"})
    (store.staging_dir / "not-a-staging-id").mkdir()
    an_hour_ago = time.time() - 3600
    for dirpath, dirnames, filenames in os.walk(old.directory):
        for name in dirnames + filenames:
            os.utime(Path(dirpath, name), (an_hour_ago, an_hour_ago))
    os.utime(old.directory, (an_hour_ago, an_hour_ago))

    leftovers = store.leftover_staging(older_than_seconds=600)

    assert [leftover.staging_id for leftover in leftovers] == [old.staging_id]
    (leftover,) = leftovers
    assert isinstance(leftover, LeftoverStaging)
    assert leftover.path == old.directory
    assert leftover.bytes == 8
    assert 3500 < leftover.age_seconds < 3700
    assert fresh.staging_id not in {item.staging_id for item in leftovers}


def test_leftover_staging_counts_a_recent_write_deep_inside(store: LocalStore) -> None:
    staged = staged_book(store, "busy", {"deep/er/file": b"x"})
    an_hour_ago = time.time() - 3600
    for path in (staged.directory, staged.data_path, staged.data_path / "deep"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert store.leftover_staging(older_than_seconds=600) == []


# -- health --------------------------------------------------------------------------


def test_health_of_a_ready_store(store: LocalStore) -> None:
    health = store.health()
    assert isinstance(health, StoreHealth)
    report = health.as_dict()
    assert report["exists"] is True
    assert report["writable"] is True
    assert report["staging_present"] is True
    assert report["store_present"] is True
    assert isinstance(report["free_bytes"], int)
    assert 0 < report["free_bytes"] <= report["total_bytes"]  # type: ignore[operator]
    assert report["name"] == "test-store"
    assert report["kind"] == "local"


def test_health_of_a_missing_root_does_not_raise(tmp_path: Path) -> None:
    health = LocalStore("gone", tmp_path / "missing", reserve_bytes=0).health()
    assert not health.exists
    assert not health.writable
    assert not health.staging_present
    assert health.free_bytes == 0


def test_operations_before_ensure_layout_fail_clearly(tmp_path: Path) -> None:
    local = LocalStore("new", tmp_path / "root", reserve_bytes=0)
    (tmp_path / "root").mkdir()
    with pytest.raises(StoreError, match="ensure_layout"):
        local.stage("book", 1)


# -- unprivileged user ---------------------------------------------------------------


def _exercise_as_unprivileged_user(root: Path) -> None:
    """Run inside the forked child after it dropped root: a real permission model applies."""
    probe_source = root / "probe"
    (probe_source / "child").mkdir(parents=True)
    os.chmod(probe_source / "child", 0o555)
    (root / "elsewhere").mkdir()
    try:
        os.rename(probe_source / "child", root / "elsewhere" / "child")
    except PermissionError:
        pass  # the reason commit() write-protects the top directory only after the move
    else:
        raise AssertionError("a 0o555 directory moved to another parent without EACCES")

    local = LocalStore("user", root / "store-root", reserve_bytes=0)
    local.ensure_layout()
    staged = staged_book(local, "2026/book", BOOK_TREE)
    final = local.commit(staged, "2026/book")
    assert read_tree(final) == BOOK_TREE
    assert mode_of(final) == 0o555
    assert not os.access(final / "top.txt", os.W_OK)
    try:
        (final / "new").write_bytes(b"x")
    except PermissionError:
        pass
    else:
        raise AssertionError("wrote into a stored book")

    file_staged = staged_book(local, "2026/file")
    local.commit(file_staged, "2026/file")

    local.delete("2026/book")
    local.delete("2026/file")
    assert os.listdir(local.store_dir) == []

    leftover = staged_book(local, "x", BOOK_TREE)
    os.chmod(leftover.data_path / "sub" / "deeper", 0o000)
    os.chmod(leftover.data_path / "sub", 0o555)
    os.chmod(leftover.data_path, 0o555)
    local.discard_staging(leftover.staging_id)
    assert os.listdir(local.staging_dir) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_commit_and_delete_work_for_an_unprivileged_user() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    root = Path(tempfile.mkdtemp(prefix="librarian-unprivileged-"))
    try:
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                _exercise_as_unprivileged_user(root)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "see the child's traceback above"
    finally:
        shutil.rmtree(root)
