"""Tests for the pinned checksum format, directory checksums and copy-while-hashing."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import pickle
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from librarian_dagster.storage import checksums, writeback
from librarian_dagster.storage.checksums import (
    ALGORITHMS,
    CHUNK_SIZE,
    DEFAULT_ALGORITHM,
    Checksum,
    ChecksumError,
    DirectoryDigest,
    SourceChangedError,
    UnsupportedEntryError,
    copy_and_hash,
    hash_file,
    hash_path,
    new_hasher,
)
from librarian_dagster.storage.writeback import start_writeback

# Published test vectors (RFC 1321, FIPS 180-2, the BLAKE3 and xxHash reference
# implementations).  They pin the algorithms, so a library swap cannot change digests.
KNOWN_VECTORS = [
    ("md5", b"", "d41d8cd98f00b204e9800998ecf8427e"),
    ("md5", b"abc", "900150983cd24fb0d6963f7d28e17f72"),
    ("sha256", b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("sha256", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("blake3", b"", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
    ("xxh3_128", b"", "99aa06d3014798d86001c324468d497f"),
]


def write(path: Path, data: bytes) -> Path:
    """Create ``path`` (and its parents) holding ``data``; tests build books with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_book(root: Path) -> Path:
    """A small nested directory book with an empty file and an empty subdirectory."""
    write(root / "a.txt", b"alpha")
    write(root / "sub" / "b.bin", bytes(range(256)) * 10)
    write(root / "sub" / "deeper" / "c", b"")
    (root / "empty").mkdir()
    return root


def tree_bytes(root: Path) -> dict[str, bytes | None]:
    """Everything below ``root``: files map to contents, directories to None."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("algorithm", "data", "expected"), KNOWN_VECTORS)
def test_known_vectors(tmp_path: Path, algorithm: str, data: bytes, expected: str) -> None:
    path = write(tmp_path / "f", data)
    assert hash_file(path, algorithm) == Checksum(algorithm, expected)
    assert str(hash_path(path, algorithm)) == f"{algorithm}:{expected}"


def test_default_is_xxh3_128() -> None:
    assert DEFAULT_ALGORITHM == "xxh3_128"
    assert set(ALGORITHMS) == {"xxh3_128", "blake3", "sha256", "md5"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_multi_chunk_file_equals_one_shot(tmp_path: Path, algorithm: str) -> None:
    data = random.Random(1).randbytes(2 * CHUNK_SIZE + 12345)
    one_shot = new_hasher(algorithm)
    one_shot.update(data)
    assert hash_file(write(tmp_path / "big", data), algorithm).hexdigest == one_shot.hexdigest()


def test_new_hasher_rejects_unknown_algorithm() -> None:
    with pytest.raises(ChecksumError, match="unknown algorithm 'crc32'"):
        new_hasher("crc32")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "md5:d41d8cd98f00b204e9800998ecf8427e"),
        ("md5:::d41d8cd98f00b204e9800998ecf8427e", "md5:d41d8cd98f00b204e9800998ecf8427e"),
        ("d41d8cd98f00b204e9800998ecf8427e", "md5:d41d8cd98f00b204e9800998ecf8427e"),
        ("D41D8CD98F00B204E9800998ECF8427E", "md5:d41d8cd98f00b204e9800998ecf8427e"),
        ("xxh3_128:99AA06D3014798D86001C324468D497F", "xxh3_128:99aa06d3014798d86001c324468d497f"),
        (f"sha256:{'0' * 64}", f"sha256:{'0' * 64}"),
        (f"blake3:::{'f' * 64}", f"blake3:{'f' * 64}"),
    ],
)
def test_parse_accepts_and_normalises(text: str, expected: str) -> None:
    assert str(Checksum.parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty checksum"),
        ("crc32:cbf43926", "unknown algorithm 'crc32'"),
        ("md5:d41d8cd98f00b204e9800998ecf8427", "md5 digest needs 32 hex digits, got 31"),
        (f"sha256:{'0' * 32}", "sha256 digest needs 64 hex digits, got 32"),
        ("md5:g41d8cd98f00b204e9800998ecf8427e", "non-hexadecimal"),
        ("md5::d41d8cd98f00b204e9800998ecf8427e", "needs 32 hex digits, got 33"),
        ("md5:", "got 0"),
        ("abc", "no '<algorithm>:' prefix and not a bare md5"),
        ("z" * 32, "non-hexadecimal"),
        (" md5:d41d8cd98f00b204e9800998ecf8427e", "unknown algorithm ' md5'"),
    ],
)
def test_parse_rejects_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ChecksumError, match=message) as excinfo:
        Checksum.parse(text)
    assert "\n" not in str(excinfo.value)


def test_constructor_refuses_non_canonical_digest() -> None:
    with pytest.raises(ChecksumError, match="lower-case"):
        Checksum("md5", "D41D8CD98F00B204E9800998ECF8427E")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_str_round_trip(tmp_path: Path, algorithm: str) -> None:
    checksum = hash_file(write(tmp_path / "f", b"round trip"), algorithm)
    assert Checksum.parse(str(checksum)) == checksum


def test_directory_checksum_follows_the_documented_definition(tmp_path: Path) -> None:
    book = make_book(tmp_path / "book")
    outer = hashlib.sha256()
    for relpath in sorted(["a.txt", "sub/b.bin", "sub/deeper/c"]):
        data = (book / relpath).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        outer.update(f"{relpath}\0{len(data)}\0{digest}\n".encode())
    assert hash_path(book, "sha256") == Checksum("sha256", outer.hexdigest())


def test_directory_checksum_depends_on_content_not_location(tmp_path: Path) -> None:
    assert hash_path(make_book(tmp_path / "one")) == hash_path(make_book(tmp_path / "two"))


Mutation = Callable[[Path], object]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: (b / "a.txt").rename(b / "A.txt"), id="rename"),
        pytest.param(lambda b: write(b / "a.txt", b"alphA"), id="one-byte"),
        pytest.param(lambda b: (b / "a.txt").rename(b / "empty" / "a.txt"), id="move-into-dir"),
        pytest.param(lambda b: write(b / "empty" / "new", b""), id="add-empty-file"),
    ],
)
def test_directory_checksum_changes(tmp_path: Path, mutate: Mutation) -> None:
    book = make_book(tmp_path / "book")
    before = hash_path(book)
    mutate(book)
    assert hash_path(book) != before


def test_empty_directories_contribute_nothing(tmp_path: Path) -> None:
    book = make_book(tmp_path / "book")
    before = hash_path(book)
    (book / "empty" / "nested").mkdir()
    assert hash_path(book) == before


def test_empty_dir_differs_from_dir_with_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "with_file" / "f", b"")
    assert hash_path(tmp_path / "empty") != hash_path(tmp_path / "with_file")


def test_symlink_inside_book_is_refused(tmp_path: Path) -> None:
    book = make_book(tmp_path / "book")
    (book / "sub" / "link").symlink_to("b.bin")
    with pytest.raises(UnsupportedEntryError, match="'sub/link' is a symlink") as excinfo:
        hash_path(book)
    assert (excinfo.value.relpath, excinfo.value.kind) == ("sub/link", "symlink")


def test_fifo_inside_book_is_refused(tmp_path: Path) -> None:
    book = make_book(tmp_path / "book")
    os.mkfifo(book / "empty" / "pipe")
    with pytest.raises(UnsupportedEntryError, match="'empty/pipe' is a fifo"):
        hash_path(book)


def test_socket_inside_book_is_refused(tmp_path: Path) -> None:
    book = tmp_path / "b"
    book.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(book / "s"))
        with pytest.raises(UnsupportedEntryError, match="'s' is a socket"):
            hash_path(book)


def test_book_that_is_itself_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UnsupportedEntryError, match="is a fifo"):
        hash_path(tmp_path / "pipe")


def test_non_utf8_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    try:
        write(Path(os.fsdecode(bytes(tmp_path / "b") + b"/\xff")), b"")
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    with pytest.raises(ChecksumError, match="not valid UTF-8"):
        hash_path(tmp_path / "b")


def test_unsupported_entry_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(UnsupportedEntryError("x/y", "fifo")))
    assert (error.relpath, error.kind, str(error)) == ("x/y", "fifo", str(error))


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
    assert checksums.ONE_PASS_MAX < BIG
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
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
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
    write(src / "exactly_one_pass", b"m" * checksums.ONE_PASS_MAX)

    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("small files need no hashing thread")

    monkeypatch.setattr(checksums, "ThreadPoolExecutor", no_threads)
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
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
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
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
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
        real_status = checksums._book_status

        def status_then_change(path: Path) -> os.stat_result:
            status = real_status(path)
            then_change()
            return status

        monkeypatch.setattr(checksums, "_book_status", status_then_change)
    else:
        real_scan = checksums.scan_tree

        def scan_then_change(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
            found = real_scan(root)
            then_change()
            return found

        monkeypatch.setattr(checksums, "scan_tree", scan_then_change)

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
    real_pump = checksums._pump
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

    monkeypatch.setattr(checksums, "_pump", pump_broken_in_threads)
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
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
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    hashed: list[int] = []
    first_chunk_hashed = threading.Event()
    real_pump = checksums._pump

    def slow_pump(
        path: Path,
        hasher: checksums.Hasher,
        buffer: memoryview,
        progress: checksums.Progress | None,
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

    monkeypatch.setattr(checksums, "_pump", slow_pump)
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
        sync_file_range = writeback._sync_file_range()
        assert sync_file_range is not None
        with path.open("r+b") as f:
            # 4 GiB - 1 is valid only if passed as 64 bits (as 32 bits it would be -1: EINVAL).
            assert sync_file_range(f.fileno(), (1 << 32) - 1, (1 << 32) - 1, 2) == 0
            assert sync_file_range(f.fileno(), 0, 0, 1 << 10) == -1  # bad flags
            assert ctypes.get_errno() == errno.EINVAL


def test_directory_digest_is_order_independent() -> None:
    entries = [("b", 1, "0" * 32), ("a/z", 2, "1" * 32), ("a.txt", 3, "2" * 32)]
    forward, backward = DirectoryDigest(), DirectoryDigest()
    for entry in entries:
        forward.add(*entry)
    for entry in reversed(entries):
        backward.add(*entry)
    assert forward.result() == backward.result()


@pytest.mark.parametrize("relpath", ["", "/abs", "a//b", "./a", "a/../b", "a/", "a\0b"])
def test_directory_digest_rejects_ambiguous_paths(relpath: str) -> None:
    with pytest.raises(ChecksumError, match="normalised relative POSIX path"):
        DirectoryDigest().add(relpath, 0, "0" * 32)


def test_directory_digest_rejects_duplicates_and_bad_digests() -> None:
    digest = DirectoryDigest("md5")
    digest.add("a", 0, "0" * 32)
    with pytest.raises(ChecksumError, match="listed twice"):
        digest.add("a", 0, "0" * 32)
    with pytest.raises(ChecksumError, match="needs 32 hex digits"):
        digest.add("b", 0, "0" * 64)


@pytest.mark.parametrize("copy", [False, True], ids=["hash_path", "copy_and_hash"])
@pytest.mark.parametrize("book", ["file", "dir"])
def test_progress_sums_to_total_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, book: str, copy: bool
) -> None:
    # copy_and_hash reports per copied chunk; shrink its chunks to CHUNK_SIZE to see them.
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
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


def test_empty_directory_and_empty_file_share_a_checksum(tmp_path: Path) -> None:
    """Documented property: the book's kind is not part of its checksum."""
    (tmp_path / "dir").mkdir()
    assert hash_path(tmp_path / "dir") == hash_path(write(tmp_path / "file", b""))


@pytest.mark.parametrize("writeback", [True, False])
def test_copy_and_hash_starts_writeback_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writeback: bool
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(BIG))
    monkeypatch.setattr(checksums, "COPY_CHUNK_SIZE", CHUNK_SIZE)
    kicks: list[tuple[int, int]] = []
    monkeypatch.setattr(
        checksums, "start_writeback", lambda fd, offset=0, length=0: kicks.append((offset, length))
    )
    checksum = copy_and_hash(src, tmp_path / "dst.bin", fsync=False, writeback=writeback)
    assert checksum == hash_path(src)
    assert (tmp_path / "dst.bin").read_bytes() == src.read_bytes()
    expected = [(0, CHUNK_SIZE), (CHUNK_SIZE, CHUNK_SIZE), (2 * CHUNK_SIZE, CHUNK_SIZE)]
    assert kicks == ([*expected, (3 * CHUNK_SIZE, 11)] if writeback else [])
