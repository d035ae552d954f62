"""Tests for the pinned checksum format, directory checksums and copy-while-hashing."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

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
