"""Tests for the pinned checksum format, directory checksums and copy-while-hashing."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xxhash

from librarian_dagster.storage.checksums import (
    ALGORITHMS,
    CHUNK_SIZE,
    DEFAULT_ALGORITHM,
    Checksum,
    ChecksumError,
    DirectoryDigest,
    UnsupportedEntryError,
    hash_file,
    hash_path,
    new_buffer,
    new_hasher,
)

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


def test_empty_directory_and_empty_file_share_a_checksum(tmp_path: Path) -> None:
    """Documented property: the book's kind is not part of its checksum."""
    (tmp_path / "dir").mkdir()
    assert hash_path(tmp_path / "dir") == hash_path(write(tmp_path / "file", b""))


def test_reading_ahead_in_a_second_thread_gives_the_same_checksums(tmp_path: Path) -> None:
    from librarian_dagster.storage.checksums import OVERLAP_MIN_BYTES
    from librarian_dagster.storage.read_ahead import pump_overlapped

    big = tmp_path / "book" / "big.dat"
    big.parent.mkdir()
    big.write_bytes(os.urandom(OVERLAP_MIN_BYTES + 12345))
    (tmp_path / "book" / "small.dat").write_bytes(b"small")
    for algorithm in ("xxh3_128", "sha256"):
        assert hash_path(big, algorithm, overlap=True) == hash_path(big, algorithm)
        book = tmp_path / "book"
        assert hash_path(book, algorithm, overlap=True) == hash_path(book, algorithm)
    seen: list[int] = []
    hasher = xxhash.xxh3_128()
    size = pump_overlapped(
        big, hasher, [memoryview(bytearray(1 << 20)) for _ in range(3)], seen.append
    )
    assert size == sum(seen) == big.stat().st_size


def test_a_read_ahead_error_reaches_the_caller_and_the_reader_ends(tmp_path: Path) -> None:
    import threading

    from librarian_dagster.storage.read_ahead import pump_overlapped

    buffers = [memoryview(bytearray(1 << 20)) for _ in range(3)]
    with pytest.raises(FileNotFoundError):
        pump_overlapped(tmp_path / "gone", xxhash.xxh3_128(), buffers)

    class Broken:
        def update(self, data: memoryview) -> None:
            raise RuntimeError("hasher failed")

    data = tmp_path / "data"
    data.write_bytes(os.urandom(5 << 20))
    with pytest.raises(RuntimeError, match="hasher failed"):
        pump_overlapped(data, Broken(), buffers)
    assert not [t for t in threading.enumerate() if t.name == "librarian-read-ahead"]


def _half_cached(tmp_path: Path) -> Path:
    """A file whose first 8 MiB are in the page cache and whose rest was evicted."""
    data = tmp_path / "half-cached"
    data.write_bytes(os.urandom(40 << 20))
    with open(data, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        f.read(8 << 20)
        os.posix_fadvise(f.fileno(), 8 << 20, 0, os.POSIX_FADV_DONTNEED)
    return data


def test_the_cached_head_is_hashed_in_place_and_the_rest_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads that would wait for the disk (EAGAIN) hand the rest of the file to the thread."""
    from librarian_dagster.storage import read_ahead

    data = _half_cached(tmp_path)
    whole = hash_path(data)
    assert hash_path(data, overlap=True) == whole  # the real page cache, however it ended

    calls = {"preadv": 0}
    real_preadv = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
        calls["preadv"] += 1
        if calls["preadv"] > 3:
            raise BlockingIOError(errno.EAGAIN, "would block")
        return real_preadv(fd, buffers, offset, flags)

    started: list[int] = []
    real_overlapped = read_ahead.pump_overlapped

    def overlapped(*args: Any, offset: int = 0, **kwargs: Any) -> int:
        started.append(offset)
        return real_overlapped(*args, offset=offset, **kwargs)

    monkeypatch.setattr(read_ahead.os, "preadv", preadv)
    monkeypatch.setattr(read_ahead, "pump_overlapped", overlapped)
    seen: list[int] = []
    hasher = xxhash.xxh3_128()
    size = read_ahead.pump_cached_first(
        data, hasher, new_buffer(), lambda: [new_buffer() for _ in range(3)], seen.append
    )
    assert started == [3 * len(new_buffer())]
    assert size == sum(seen) == data.stat().st_size
    assert f"xxh3_128:{hasher.hexdigest()}" == str(whole)


def test_a_file_system_without_nowait_reads_go_to_the_thread_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian_dagster.storage import read_ahead

    def unsupported(*args: Any) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    monkeypatch.setattr(read_ahead.os, "preadv", unsupported)
    made: list[int] = []

    def buffers() -> list[memoryview]:
        made.append(1)
        return [new_buffer() for _ in range(3)]

    hasher = xxhash.xxh3_128()
    assert read_ahead.pump_cached_first(data, hasher, new_buffer(), buffers) == 3 << 20
    assert made == [1]
    assert f"xxh3_128:{hasher.hexdigest()}" == str(hash_path(data))


def test_a_fully_cached_file_never_starts_the_thread(tmp_path: Path) -> None:
    from librarian_dagster.storage import read_ahead

    data = tmp_path / "data"
    data.write_bytes(os.urandom(3 << 20))
    data.read_bytes()

    def no_thread() -> list[memoryview]:
        raise AssertionError("the read-ahead thread started for a cached file")

    hasher = xxhash.xxh3_128()
    assert read_ahead.pump_cached_first(data, hasher, new_buffer(), no_thread) == 3 << 20
