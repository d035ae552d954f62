"""Tests for copy-while-hashing (``storage.movers.copy``) and the writeback kick."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from librarian_dagster.storage import posix
from librarian_dagster.storage.checksums import (
    CHUNK_SIZE,
    ChecksumError,
    Hasher,
    Progress,
    UnsupportedEntryError,
    hash_path,
)
from librarian_dagster.storage.movers import copy as copying
from librarian_dagster.storage.movers.copy import SourceChangedError, copy_and_hash
from librarian_dagster.storage.posix import start_writeback
from tests.test_checksums import make_book, tree_bytes, write


@pytest.mark.parametrize("algorithm", ["xxh3_128", "md5"])
def test_copy_and_hash_file(tmp_path: Path, algorithm: str) -> None:
    src = write(tmp_path / "src.bin", random.Random(2).randbytes(CHUNK_SIZE + 7))
    checksum = copy_and_hash(src, tmp_path / "dst.bin", algorithm)
    assert checksum == hash_path(src, algorithm)
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("algorithm", ["xxh3_128", "blake3"])
def test_copy_and_hash_directory(tmp_path: Path, algorithm: str) -> None:
    src = make_book(tmp_path / "src")
    checksum = copy_and_hash(src, tmp_path / "dst", algorithm, fsync=False)
    assert checksum == hash_path(src, algorithm) == hash_path(tmp_path / "dst", algorithm)
    assert tree_bytes(tmp_path / "dst") == tree_bytes(src)


@pytest.mark.parametrize("book", ["file", "dir"])
def test_copy_and_hash_refuses_existing_destination(tmp_path: Path, book: str) -> None:
    src = write(tmp_path / "src", b"new") if book == "file" else make_book(tmp_path / "src")
    dst = write(tmp_path / "dst", b"precious")
    with pytest.raises(FileExistsError):
        copy_and_hash(src, dst)
    assert dst.read_bytes() == b"precious"


def test_copy_and_hash_refuses_symlink_before_copying(tmp_path: Path) -> None:
    src = make_book(tmp_path / "src")
    (src / "zz-link").symlink_to("a.txt")
    with pytest.raises(UnsupportedEntryError):
        copy_and_hash(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_copy_and_hash_removes_partial_copy_on_failure(tmp_path: Path) -> None:
    src = make_book(tmp_path / "src")

    def fail_late(nbytes: int) -> None:
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        copy_and_hash(src, tmp_path / "dst", progress=fail_late)
    assert not (tmp_path / "dst").exists()


def test_copy_and_hash_unknown_algorithm_touches_nothing(tmp_path: Path) -> None:
    src = write(tmp_path / "src", b"x")
    with pytest.raises(ChecksumError):
        copy_and_hash(src, tmp_path / "dst", "crc32")
    assert not (tmp_path / "dst").exists()


needs_copy_file_range = pytest.mark.skipif(
    not hasattr(os, "copy_file_range"), reason="no os.copy_file_range on this platform"
)
BIG = 3 * CHUNK_SIZE + 11  # above ONE_PASS_MAX: copied in the kernel, hashed by the thread


def book_for(tmp_path: Path, book: str) -> Path:
    """A big file book, or the nested directory book (small files) plus a big file."""
    assert copying.ONE_PASS_MAX < BIG
    data = random.Random(3).randbytes(BIG)
    if book == "file":
        return write(tmp_path / "src.bin", data)
    src = make_book(tmp_path / "src")
    write(src / "sub" / "big.bin", data)
    return src


def copied_like(src: Path, dst: Path) -> bool:
    if src.is_dir():
        return tree_bytes(dst) == tree_bytes(src)
    return dst.read_bytes() == src.read_bytes()


def book_size(src: Path) -> int:
    return sum(p.stat().st_size for p in [src, *src.rglob("*")] if p.is_file())


def copier_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("copy_and_hash")]


@needs_copy_file_range
@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("book", ["file", "dir"])
def test_copy_and_hash_copies_big_files_in_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str, fsync: bool
) -> None:
    src = book_for(tmp_path, book)
    real = os.copy_file_range
    calls: list[int] = []

    def counting(src_fd: int, dst_fd: int, count: int, *args: int | None) -> int:
        calls.append(count)
        return real(src_fd, dst_fd, count, *args)

    monkeypatch.setattr(os, "copy_file_range", counting)
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    progress_threads: set[int] = set()
    reported: list[int] = []

    def progress(n: int) -> None:
        progress_threads.add(threading.get_ident())
        reported.append(n)

    checksum = copy_and_hash(src, tmp_path / "dst", progress=progress, fsync=fsync)

    assert checksum == hash_path(src) == hash_path(tmp_path / "dst")
    assert copied_like(src, tmp_path / "dst")
    # The big file in four chunks; the directory's small files are copied in one pass.
    assert calls == [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 11]
    assert sum(reported) == book_size(src)
    assert progress_threads == {threading.get_ident()}
    assert not copier_threads()


def test_copy_and_hash_of_small_files_starts_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_book(tmp_path / "src")
    write(src / "exactly_one_pass", b"m" * copying.ONE_PASS_MAX)

    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("small files need no hashing thread")

    monkeypatch.setattr(copying, "ThreadPoolExecutor", no_threads)
    monkeypatch.setattr(os, "copy_file_range", no_threads, raising=False)
    assert copy_and_hash(src, tmp_path / "dst") == hash_path(src)
    assert copied_like(src, tmp_path / "dst")


@pytest.mark.parametrize("how", ["EXDEV", "missing"])
@pytest.mark.parametrize("book", ["file", "dir"])
def test_copy_and_hash_falls_back_to_copying_in_user_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str, how: str
) -> None:
    src = book_for(tmp_path, book)
    if book == "dir":
        write(src / "big2", b"b" * BIG)
    calls: list[int] = []
    if how == "missing":  # macOS, or a Python without it
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    else:

        def cross_device(src_fd: int, dst_fd: int, count: int, *args: int | None) -> int:
            calls.append(count)
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

        monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    reported: list[int] = []

    checksum = copy_and_hash(src, tmp_path / "dst", progress=reported.append)

    assert checksum == hash_path(src) == hash_path(tmp_path / "dst")
    assert copied_like(src, tmp_path / "dst")
    assert len(calls) == (1 if how == "EXDEV" else 0)  # not tried again for the next big file
    assert sum(reported) == book_size(src)
    assert max(reported) <= CHUNK_SIZE


@needs_copy_file_range
def test_copy_and_hash_raises_when_the_kernel_copy_fails_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = book_for(tmp_path, "file")
    real = os.copy_file_range
    calls: list[int] = []

    def fail_second(src_fd: int, dst_fd: int, count: int, *args: int | None) -> int:
        calls.append(count)
        if len(calls) == 2:
            raise OSError(errno.EXDEV, "cannot copy the rest")  # no fallback after bytes went
        return real(src_fd, dst_fd, count, *args)

    monkeypatch.setattr(os, "copy_file_range", fail_second)
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    with pytest.raises(OSError, match="cannot copy the rest"):
        copy_and_hash(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert len(calls) == 2
    assert not copier_threads()


@pytest.mark.parametrize("path", ["copy_file_range", "user_space", "one_pass"])
@pytest.mark.parametrize("change", ["grows", "shrinks"])
@pytest.mark.parametrize("book", ["file", "dir"])
def test_copy_and_hash_refuses_a_source_that_changes_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str, change: str, path: str
) -> None:
    """Sizes are taken when the book is scanned; a file changes right after that."""
    if path == "one_pass":  # a small file
        if book == "file":
            src = write(tmp_path / "src.bin", b"s" * 2560)
        else:
            src = make_book(tmp_path / "src")
        victim = src if book == "file" else src / "sub" / "b.bin"
    else:
        src = book_for(tmp_path, book)
        victim = src if book == "file" else src / "sub" / "big.bin"
    if path == "user_space":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    elif path == "copy_file_range" and not hasattr(os, "copy_file_range"):
        pytest.skip("no os.copy_file_range on this platform")

    def then_change() -> None:
        if change == "grows":
            with victim.open("ab") as f:
                f.write(b"appended after the scan")
        else:
            os.truncate(victim, victim.stat().st_size // 2)

    if book == "file":
        real_status = copying.book_status

        def status_then_change(path: Path) -> os.stat_result:
            status = real_status(path)
            then_change()
            return status

        monkeypatch.setattr(copying, "book_status", status_then_change)
    else:
        real_scan = copying.scan_tree

        def scan_then_change(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
            found = real_scan(root)
            then_change()
            return found

        monkeypatch.setattr(copying, "scan_tree", scan_then_change)

    dst = tmp_path / "dst"
    with pytest.raises(SourceChangedError, match="changed while being copied"):
        copy_and_hash(src, dst)
    assert not dst.exists()
    assert not copier_threads()


@pytest.mark.parametrize("book", ["file", "dir"])
def test_copy_and_hash_raises_the_hashing_threads_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str
) -> None:
    src = book_for(tmp_path, book)
    real_pump = copying.pump
    failed_in: list[threading.Thread] = []

    class HashingBroke(RuntimeError):
        pass

    def pump_broken_in_threads(*args: Any, **kwargs: Any) -> int:
        if threading.current_thread() is threading.main_thread():
            return real_pump(*args, **kwargs)  # small files, hashed while copied
        failed_in.append(threading.current_thread())
        raise HashingBroke("hash thread broke")

    reported: list[int] = []

    def progress(n: int) -> None:
        reported.append(n)
        deadline = time.monotonic() + 5
        while not failed_in and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # for the executor to record the error after the raise

    monkeypatch.setattr(copying, "pump", pump_broken_in_threads)
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    with pytest.raises(HashingBroke, match="hash thread broke"):
        copy_and_hash(src, tmp_path / "dst", progress=progress)
    assert not (tmp_path / "dst").exists()
    assert len(failed_in) == 1
    assert reported == [CHUNK_SIZE]  # the copy stopped at the next chunk, not at the end
    assert not copier_threads()


def test_failed_copy_stops_the_hashing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hasher must not go on reading once the copy failed: it is stopped and joined."""
    src = write(tmp_path / "src.bin", b"z" * (8 * CHUNK_SIZE))
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    hashed: list[int] = []
    first_chunk_hashed = threading.Event()
    real_pump = copying.pump

    def slow_pump(
        path: Path,
        hasher: Hasher,
        buffer: memoryview,
        progress: Progress | None,
        out: object = None,
        stop: threading.Event | None = None,
    ) -> int:
        assert out is None and stop is not None  # only the hashing thread reads big files

        def record(n: int) -> None:
            hashed.append(n)
            first_chunk_hashed.set()
            assert stop is not None
            stop.wait(5)  # as slow as a cold disk, until told to stop

        return real_pump(path, hasher, buffer, record, stop=stop)

    def fail_when_hashing_started(n: int) -> None:
        assert first_chunk_hashed.wait(5)
        raise OSError("copy failed")

    monkeypatch.setattr(copying, "pump", slow_pump)
    with pytest.raises(OSError, match="copy failed"):
        copy_and_hash(src, tmp_path / "dst", progress=fail_when_hashing_started)
    assert not copier_threads()
    assert len(hashed) == 1  # stopped after the chunk it was reading, not after all eight
    assert not (tmp_path / "dst").exists()


def test_start_writeback_on_a_regular_file(tmp_path: Path) -> None:
    path = write(tmp_path / "dirty", b"d" * (3 * CHUNK_SIZE))
    with path.open("r+b") as f:
        f.write(b"more dirty data")
        f.flush()
        start_writeback(f.fileno())
        start_writeback(f.fileno(), CHUNK_SIZE, CHUNK_SIZE)
    if sys.platform.startswith("linux"):  # resolved, and called with a signature libc accepts
        sync_file_range = posix._sync_file_range()
        assert sync_file_range is not None
        with path.open("r+b") as f:
            # 4 GiB - 1 is valid only if passed as 64 bits (as 32 bits it would be -1: EINVAL).
            assert sync_file_range(f.fileno(), (1 << 32) - 1, (1 << 32) - 1, 2) == 0
            assert sync_file_range(f.fileno(), 0, 0, 1 << 10) == -1  # bad flags
            assert ctypes.get_errno() == errno.EINVAL


@pytest.mark.parametrize("copy", [False, True], ids=["hash_path", "copy_and_hash"])
@pytest.mark.parametrize("book", ["file", "dir"])
def test_progress_sums_to_total_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str, copy: bool
) -> None:
    # copy_and_hash reports per copied chunk; shrink its chunks to CHUNK_SIZE to see them.
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    if book == "file":
        src = write(tmp_path / "src", b"x" * (3 * CHUNK_SIZE + 1))
    else:
        src = make_book(tmp_path / "src")
        write(src / "big", b"y" * (CHUNK_SIZE + 5))
    total = sum(p.stat().st_size for p in [src, *src.rglob("*")] if p.is_file())
    calls: list[int] = []
    if copy:
        copy_and_hash(src, tmp_path / "dst", progress=calls.append)
    else:
        hash_path(src, progress=calls.append)
    assert sum(calls) == total
    assert max(calls) <= CHUNK_SIZE


@pytest.mark.parametrize("writeback", [True, False])
def test_copy_and_hash_starts_writeback_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writeback: bool
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(BIG))
    monkeypatch.setattr(copying, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    kicks: list[tuple[int, int]] = []
    monkeypatch.setattr(
        copying, "start_writeback", lambda fd, offset=0, length=0: kicks.append((offset, length))
    )
    checksum = copy_and_hash(src, tmp_path / "dst.bin", fsync=False, writeback=writeback)
    assert checksum == hash_path(src)
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()
    expected = [(0, CHUNK_SIZE), (CHUNK_SIZE, CHUNK_SIZE), (2 * CHUNK_SIZE, CHUNK_SIZE)]
    assert kicks == ([*expected, (3 * CHUNK_SIZE, 11)] if writeback else [])
