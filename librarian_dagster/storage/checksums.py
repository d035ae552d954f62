"""Checksums of books in the pinned ``"<algorithm>:<hex>"`` format.

Every checksum the librarian stores, compares or sends is written as
``"<algorithm>:<lower-case hex digest>"``.  Known algorithms are ``xxh3_128``
(the default: fast enough to keep up with storage), ``blake3``, ``sha256`` and
``md5`` (kept for interoperability with the upstream Librarian, whose
``"md5:::<hex>"`` spelling and bare md5 digests are accepted on input only).

A book is a regular file or a directory tree.  A file's checksum is the digest
of its bytes.  A directory's checksum is defined, for every implementation
(local walk, streamed tar upload, remote store), as:

* take every regular file below the directory, identified by its path
  relative to the directory, POSIX separators, no ``.`` or ``..`` parts;
* sort the files by that path (Python ``str`` order, which equals the byte
  order of the UTF-8 encoding);
* feed ``f"{relpath}\\0{size}\\0{file_hexdigest}\\n".encode("utf-8")`` for each
  file into one fresh hasher of the same algorithm, where ``size`` is the
  decimal byte count and ``file_hexdigest`` the file's own digest;
* the directory's checksum is that hasher's hex digest.

So renaming or moving a file changes the checksum, and empty directories
contribute nothing.  File names must be valid UTF-8.  Nothing marks a checksum as a
directory's (an empty directory has the empty file's checksum), so whether a book
is a file or a directory is recorded next to its checksum.  Symlinks, devices,
fifos and sockets are not allowed inside a book (their meaning is not portable
between stores) and raise :class:`UnsupportedEntryError`.  :class:`DirectoryDigest`
is the single implementation of this format.

:func:`copy_and_hash` copies a book and returns the source's checksum.  It reads a big file
twice: the kernel copies the bytes (``copy_file_range``) while a second thread hashes the
source, because on our VMs writing from user space (read, hash, write into fresh page cache)
is much slower than the kernel's copy, and the second read is cheap from the page cache.
Small files are still read once, hashed and written (see the comment above
:data:`ONE_PASS_MAX`).  The librarian verifies the staged copy against the source's checksum,
so the check is still end to end.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import mmap
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3
import xxhash

from librarian_dagster.storage.writeback import start_writeback

DEFAULT_ALGORITHM = "xxh3_128"
# 1 MiB: fits in L2 between read and hash; smaller is slower, up to 8 MiB is no faster.
CHUNK_SIZE = 1 << 20
# 64 MiB per copy_file_range call in copy_and_hash: the copy stays in the kernel, writeback of
# each chunk starts right after it, progress moves ~15 times a second.  16-256 MiB measured
# alike here (the disk, not the chunk size, sets the pace).
COPY_CHUNK_SIZE = 64 << 20

Progress = Callable[[int], None]
StrPath = str | os.PathLike[str]


class Hasher(Protocol):
    """The incremental-hash interface shared by hashlib, xxhash and blake3."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


_FACTORIES: dict[str, Callable[[], Hasher]] = {
    "xxh3_128": xxhash.xxh3_128,
    "blake3": blake3.blake3,
    "sha256": hashlib.sha256,
    # md5 is for interoperability, not security; say so, or FIPS-mode OpenSSL refuses it.
    "md5": functools.partial(hashlib.md5, usedforsecurity=False),
}
_HEX_LENGTHS = {"xxh3_128": 32, "blake3": 64, "sha256": 64, "md5": 32}
ALGORITHMS: tuple[str, ...] = tuple(_FACTORIES)
_HEX = re.compile(r"[0-9a-fA-F]*")
# copy_file_range errors meaning "not for these files" (across filesystems before Linux 5.3,
# no such system call, a filesystem without support, a seccomp filter (EPERM), a CIFS quirk
# (EIO), a swap file): while nothing is copied yet, the user-space loop copies the file.
_NO_KERNEL_COPY = frozenset(
    {
        errno.EXDEV,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
        errno.EINVAL,
        errno.ETXTBSY,
        errno.EPERM,
        errno.EIO,
    }
)
_KINDS = {
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


class ChecksumError(ValueError):
    """A checksum, algorithm or book entry that cannot be hashed or compared."""


class UnsupportedEntryError(ChecksumError):
    """A book contains something other than regular files and directories."""

    def __init__(self, relpath: str, kind: str) -> None:
        super().__init__(f"{relpath!r} is a {kind}; books may hold only regular files and dirs")
        self.relpath = relpath
        self.kind = kind

    def __reduce__(self) -> tuple[type[UnsupportedEntryError], tuple[str, str]]:
        """Pickle by constructor arguments so the error survives process boundaries."""
        return type(self), (self.relpath, self.kind)


@dataclass(frozen=True)
class Checksum:
    """A validated, canonical checksum: equal values mean equal digests."""

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        """Reject anything non-canonical so every instance can be compared and stored as is."""
        expected = _HEX_LENGTHS.get(self.algorithm)
        if expected is None:
            raise ChecksumError(
                f"unknown algorithm {self.algorithm!r} (known: {', '.join(ALGORITHMS)})"
            )
        if len(self.hexdigest) != expected:
            raise ChecksumError(
                f"{self.algorithm} digest needs {expected} hex digits, got {len(self.hexdigest)}"
            )
        if not _HEX.fullmatch(self.hexdigest):
            raise ChecksumError("digest contains non-hexadecimal characters")
        if self.hexdigest != self.hexdigest.lower():
            raise ChecksumError("digest must be lower-case (Checksum.parse normalises it)")

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """Read ``alg:hex``, upstream ``alg:::hex`` or a bare md5 digest; the one validator."""
        if not text:
            raise ChecksumError("empty checksum")
        algorithm, sep, hexdigest = text.partition(":")
        if not sep:
            if len(text) != _HEX_LENGTHS["md5"]:
                raise ChecksumError(
                    f"invalid checksum {text!r}: no '<algorithm>:' prefix and not a bare md5"
                )
            algorithm, hexdigest = "md5", text
        elif hexdigest.startswith("::"):
            hexdigest = hexdigest[2:]
        try:
            return cls(algorithm, hexdigest.lower())
        except ChecksumError as err:
            raise ChecksumError(f"invalid checksum {text!r}: {err}") from None


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """Return a fresh incremental hasher, so callers never import hash libraries directly."""
    try:
        return _FACTORIES[algorithm]()
    except KeyError:
        raise ChecksumError(
            f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        ) from None


class DirectoryDigest:
    """Accumulates per-file digests in any order into a directory checksum (see module doc)."""

    def __init__(self, algorithm: str = DEFAULT_ALGORITHM) -> None:
        new_hasher(algorithm)  # fail now on an unknown algorithm, not at result()
        self.algorithm = algorithm
        self._files: dict[str, tuple[int, str]] = {}

    def add(self, relpath: str, size: int, hexdigest: str) -> None:
        """Record one regular file; rejects paths that have more than one spelling."""
        parts = relpath.split("/")
        if not relpath or "\0" in relpath or any(p in ("", ".", "..") for p in parts):
            raise ChecksumError(f"not a normalised relative POSIX path: {relpath!r}")
        if relpath in self._files:
            raise ChecksumError(f"file listed twice: {relpath!r}")
        if size < 0:
            raise ChecksumError(f"negative size {size} for {relpath!r}")
        try:
            relpath.encode("utf-8")
        except UnicodeEncodeError:
            raise ChecksumError(f"file name is not valid UTF-8: {relpath!r}") from None
        self._files[relpath] = (size, Checksum(self.algorithm, hexdigest).hexdigest)

    def result(self) -> Checksum:
        """Hash the sorted file records; call it once every file has been added."""
        outer = new_hasher(self.algorithm)
        for relpath in sorted(self._files):
            size, hexdigest = self._files[relpath]
            outer.update(f"{relpath}\0{size}\0{hexdigest}\n".encode())
        return Checksum(self.algorithm, outer.hexdigest())


def _new_buffer() -> memoryview:
    """A page-aligned chunk buffer, reused for every chunk and file of a call.

    Alignment matters: the kernel copies file data into a buffer 16 bytes off a 64-byte
    boundary (where malloc often puts a bytearray's data) at under half the speed.
    """
    return memoryview(mmap.mmap(-1, CHUNK_SIZE))


def _write_all(out: io.RawIOBase, view: memoryview) -> None:
    """Write a whole chunk; unbuffered writes may be short (e.g. when interrupted)."""
    while view:
        view = view[out.write(view) :]


def _pump(
    src: StrPath,
    hasher: Hasher,
    buffer: memoryview,
    progress: Progress | None,
    out: io.RawIOBase | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Stream ``src`` through ``hasher`` (and into ``out`` when copying), reading it once.

    Returns the bytes read: the size the digest actually covers.  Once ``stop`` is set
    (copy_and_hash's copy failed) it raises :class:`_Cancelled` at the next chunk.
    """
    size = 0
    with open(src, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):  # doubles readahead on Linux; absent on macOS
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buffer):
            chunk = buffer[:n]  # a view, not a copy
            hasher.update(chunk)
            if out is not None:
                _write_all(out, chunk)
            size += n
            if progress is not None:
                progress(n)
            if stop is not None and stop.is_set():
                raise _Cancelled
    return size


def hash_file(
    path: StrPath, algorithm: str = DEFAULT_ALGORITHM, progress: Progress | None = None
) -> Checksum:
    """Checksum one file's bytes in a single streaming pass."""
    hasher = new_hasher(algorithm)
    _pump(path, hasher, _new_buffer(), progress)
    return Checksum(algorithm, hasher.hexdigest())


def _entry_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), f"file of unknown type {stat.S_IFMT(mode):#o}")


def scan_tree(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """A directory book's subdirectories (parents first) and (regular file, size) pairs.

    Relative POSIX paths. Scanning completes before anything is hashed, copied or sent, so
    an unsupported entry (symlink, device, fifo, socket) is refused before any side effect.
    """
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(root / prefix) as entries:
            for entry in entries:
                relpath = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(relpath)
                    pending.append(relpath + "/")
                elif entry.is_file(follow_symlinks=False):
                    files.append((relpath, entry.stat(follow_symlinks=False).st_size))
                else:
                    raise UnsupportedEntryError(
                        relpath, _entry_kind(entry.stat(follow_symlinks=False).st_mode)
                    )
    return dirs, files


def _book_status(path: Path) -> os.stat_result:
    """stat a book: a file or a directory, which may itself be reached via a symlink."""
    status = path.stat()
    if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
        raise UnsupportedEntryError(str(path), _entry_kind(status.st_mode))
    return status


def _fsync_path(path: Path) -> None:
    """fsync a file, or a directory to make its new entries durable (fsyncing the files
    alone does not)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _removed_on_error(path: Path, remove: Callable[[Path], object]) -> Iterator[None]:
    """Undo a half-made copy: nobody may trust it, and it would block a retry."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            remove(path)
        raise


def _digest_files(
    src: Path, files: list[tuple[str, int]], algorithm: str, progress: Progress | None
) -> Checksum:
    """Hash a directory book's files, given as scan_tree's (relpath, size) pairs."""
    digest = DirectoryDigest(algorithm)
    buffer = _new_buffer()
    for relpath, _ in files:
        hasher = new_hasher(algorithm)
        size = _pump(src / relpath, hasher, buffer, progress)
        digest.add(relpath, size, hasher.hexdigest())
    return digest.result()


def hash_path(
    path: StrPath, algorithm: str = DEFAULT_ALGORITHM, progress: Progress | None = None
) -> Checksum:
    """Checksum a book: a file's bytes, or a directory per the module's definition."""
    root = Path(path)
    if not stat.S_ISDIR(_book_status(root).st_mode):
        return hash_file(root, algorithm, progress)
    _, files = scan_tree(root)
    return _digest_files(root, files, algorithm, progress)


# -- copying --------------------------------------------------------------------------
#
# copy_and_hash copies a file bigger than ONE_PASS_MAX in the kernel while a second thread
# hashes the source (the source is read twice), and copies a smaller file in one user-space
# pass in the calling thread (read once, hash, write).  Why both, measured on the dev VM:
# * 4 GiB file, source in the page cache, no fsync: copying it from user space (read, hash,
#   write into fresh page cache) took 5.9-8.4 s, the kernel copy with the hash alongside
#   2.9-4.3 s (cp: 2.5-5.1 s); hashing alone takes 0.6 s, so the second read is cheap.
# * 1,000 files of 10 KiB on tmpfs: one pass 0.08 s, the same split into a copying and a
#   hashing thread 0.17 s: each file costs both threads several GIL hand-offs (two threads
#   hashing 10 KiB pieces were no faster than one here; with 1 MiB pieces up to 2x), which
#   outweigh what the kernel copy saves on small files.  At
#   1 MiB per file both ways cost about the same (0.6-0.7 ms per file on ext4).
#
# Sizes are those scanned before anything is created; a file whose byte count turns out
# different (it grew or shrank meanwhile) raises SourceChangedError.

# Files up to this size are copied in one pass in the calling thread (see above).
ONE_PASS_MAX = CHUNK_SIZE

# (key, source file, scanned size) of the files the hashing thread hashes.
_Sources = list[tuple[str, Path, int]]


class SourceChangedError(OSError):
    """A book's file changed size while copy_and_hash copied it; the copy was removed."""


class _Cancelled(Exception):
    """Stops the hashing thread once the copy has failed; never reaches a caller."""


def _changed(path: Path, scanned: int, found: str) -> str:
    return f"{path} changed while being copied: {scanned} bytes when scanned, {found}"


class _Copier:
    """Copies a book's files in the calling thread; see the comment above ONE_PASS_MAX.

    A big file is copied with ``copy_file_range`` in :data:`COPY_CHUNK_SIZE` chunks (in
    the kernel), or by a user-space read/write loop where the kernel cannot copy these
    files; its digest comes from the hashing thread.  After each chunk the copier starts
    writeback of what it wrote, reports progress (so ``progress`` is only ever called from
    the calling thread) and re-raises the hashing thread's error, if any, to stop early.
    """

    def __init__(
        self,
        algorithm: str,
        progress: Progress | None,
        hashing: Future[dict[str, str]] | None,
        *,
        fsync: bool,
        writeback: bool = True,
    ) -> None:
        self.algorithm = algorithm
        self.progress = progress
        self.hashing = hashing
        self.writeback = writeback
        # Small files are kicked only if this call fsyncs them; otherwise the librarian's
        # sealing kicks them (a kick costs about as much as copying a 4 KiB file here).
        self.kick_small = fsync
        self.in_kernel = hasattr(os, "copy_file_range")  # False on macOS
        self._buffer: memoryview | None = None

    def copy(self, src: Path, out: io.RawIOBase, size: int) -> str | None:
        """Copy the ``size`` bytes ``src`` had when scanned into ``out``.

        Returns the hex digest if the file was hashed here (small files), None if the
        hashing thread hashes it.
        """
        if size <= ONE_PASS_MAX:
            return self._copy_in_one_pass(src, out, size)
        with open(src, "rb", buffering=0) as source:
            if not (self.in_kernel and self._copy_in_kernel(src, source, out, size)):
                self._copy_in_user_space(src, source, out, size)
        return None

    def check(self) -> None:
        """Re-raise the hashing thread's error, if any, so a doomed copy stops early."""
        if self.hashing is not None and self.hashing.done():
            self.hashing.result()

    def _buffer_for_copy(self) -> memoryview:
        if self._buffer is None:
            self._buffer = _new_buffer()
        return self._buffer

    def _copy_in_one_pass(self, src: Path, out: io.RawIOBase, size: int) -> str:
        hasher = new_hasher(self.algorithm)
        copied = _pump(src, hasher, self._buffer_for_copy(), self.progress, out)
        if copied != size:
            raise SourceChangedError(_changed(src, size, f"{copied} were read"))
        if self.kick_small:
            start_writeback(out.fileno())
        self.check()
        return hasher.hexdigest()

    def _copy_in_kernel(
        self, src: Path, source: io.RawIOBase, out: io.RawIOBase, size: int
    ) -> bool:
        """copy_file_range all of it; False, with nothing copied, if the kernel cannot.

        Only ``size`` bytes are asked for: if the file grew, the hashing thread, which
        reads to the end, reports it.
        """
        source_fd, out_fd = source.fileno(), out.fileno()
        copied = 0
        while copied < size:
            try:
                n = os.copy_file_range(source_fd, out_fd, min(COPY_CHUNK_SIZE, size - copied))
            except OSError as error:
                if copied or error.errno not in _NO_KERNEL_COPY:
                    raise
                self.in_kernel = False  # the same pair of filesystems for every file of a book
                return False
            if n == 0:
                if not copied:
                    # Some filesystems (procfs-like, some FUSE) report 0 instead of failing;
                    # the read() of the fallback tells whether the file really shrank.
                    return False
                raise SourceChangedError(_changed(src, size, f"only {copied} were there"))
            self._chunk_done(out_fd, copied, n)
            copied += n
        return True

    def _copy_in_user_space(
        self, src: Path, source: io.RawIOBase, out: io.RawIOBase, size: int
    ) -> None:
        """The portable loop: read into the aligned buffer, write, kick writeback per chunk."""
        buffer = self._buffer_for_copy()
        copied = kicked = 0
        while n := source.readinto(buffer):
            if copied + n > size:
                raise SourceChangedError(_changed(src, size, "more now"))
            _write_all(out, buffer[:n])
            copied += n
            if copied - kicked >= COPY_CHUNK_SIZE or copied == size:
                self._chunk_done(out.fileno(), kicked, copied - kicked)
                kicked = copied
        if copied != size:
            raise SourceChangedError(_changed(src, size, f"only {copied} were there"))

    def _chunk_done(self, out_fd: int, offset: int, n: int) -> None:
        if self.writeback:
            start_writeback(out_fd, offset, n)
        if self.progress is not None:
            self.progress(n)
        self.check()


def _hash_exactly(sources: _Sources, algorithm: str, stop: threading.Event) -> dict[str, str]:
    """The hashing thread: hex digests by key, insisting on the scanned sizes."""
    buffer = _new_buffer()
    digests: dict[str, str] = {}
    for key, path, size in sources:
        if stop.is_set():
            raise _Cancelled
        hasher = new_hasher(algorithm)
        read = _pump(path, hasher, buffer, None, stop=stop)
        if read != size:
            raise SourceChangedError(_changed(path, size, f"{read} were read"))
        digests[key] = hasher.hexdigest()
    return digests


def _copy_while_hashing(
    copy: Callable[[_Copier], dict[str, str]],
    sources: _Sources,
    algorithm: str,
    progress: Progress | None,
    fsync: bool,
    writeback: bool,
) -> dict[str, str]:
    """Run ``copy`` here while a second thread hashes ``sources``; all hex digests by key.

    Either failure is raised here.  If the copy fails, the hashing thread is told to stop
    and is joined before this returns: no thread is left working after the call.  Without
    big files to hash no thread is started at all.
    """
    if not sources:
        return copy(_Copier(algorithm, progress, None, fsync=fsync, writeback=writeback))
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy_and_hash") as pool:
        hashing = pool.submit(_hash_exactly, sources, algorithm, stop)
        try:
            copier = _Copier(algorithm, progress, hashing, fsync=fsync, writeback=writeback)
            digests = copy(copier)
            return digests | hashing.result()
        except BaseException:  # also KeyboardInterrupt while waiting for the hasher
            stop.set()
            raise  # leaving the with block joins the hashing thread first


def copy_and_hash(
    src: StrPath,
    dst: StrPath,
    algorithm: str = DEFAULT_ALGORITHM,
    progress: Progress | None = None,
    *,
    fsync: bool = True,
    writeback: bool = True,
) -> Checksum:
    """Copy a book to a new ``dst`` and return ``hash_path(src)``, hashing while copying.

    Big files are copied in the kernel (``copy_file_range``, or a user-space loop where
    that is unavailable) while a second thread hashes the **source**: their source is read
    twice, deliberately.  The second read is cheap when the source is in the page cache or
    readahead keeps up (the hasher is faster than the copy, so it runs ahead and the copy
    finds the pages cached), and the kernel copy is much faster than writing from user
    space on our VMs, so the call takes about max(copy, hash) instead of their sum.
    Small files are read once, hashed and written in the calling thread (see the comment
    above :data:`ONE_PASS_MAX`).  The checksum is the source's; the librarian verifies the
    staged copy against it before committing, so the check stays end to end.  A file whose
    size is not the one it had when the book was scanned raises :class:`SourceChangedError`.

    ``dst`` must not exist (:class:`FileExistsError`, nothing changed).  With ``fsync``
    (the default) the copy, with its directory entries, is on disk when this returns.
    With ``writeback`` (the default) writeback of each chunk of a big file is started as
    soon as it is copied: where the disk is slower than memory the copy then proceeds at
    the disk's speed, and whoever fsyncs it later finds little left to write (4 GiB here,
    copy + fsync: 7.1 s with, 8.7-9.1 s without). ``writeback=False`` leaves it to the
    kernel: the call returns at memory speed with the data still dirty. ``progress`` is
    called from the calling thread only, with the bytes copied (the book's size in total).
    On any failure, whatever this call created at ``dst`` is removed.
    """
    src_path, dst_path = Path(src), Path(dst)
    new_hasher(algorithm)  # validate before touching the filesystem
    status = _book_status(src_path)
    if not stat.S_ISDIR(status.st_mode):
        size = status.st_size
        sources = [("", src_path, size)] if size > ONE_PASS_MAX else []
        with open(dst_path, "xb", buffering=0) as out, _removed_on_error(dst_path, os.unlink):

            def copy_file(copier: _Copier) -> dict[str, str]:
                digest = copier.copy(src_path, out, size)
                if fsync:
                    os.fsync(out.fileno())
                return {} if digest is None else {"": digest}

            digests = _copy_while_hashing(copy_file, sources, algorithm, progress, fsync, writeback)
            checksum = Checksum(algorithm, digests[""])
    else:
        dirs, files = scan_tree(src_path)  # refuse unsupported entries before creating anything
        big = [(relpath, size) for relpath, size in files if size > ONE_PASS_MAX]
        small = [(relpath, size) for relpath, size in files if size <= ONE_PASS_MAX]

        def copy_tree(copier: _Copier) -> dict[str, str]:
            digests: dict[str, str] = {}
            # Big files first: by the time they are copied the hashing thread is done with
            # them, and no longer competes for the GIL the small files' many calls need.
            for relpath, size in big + small:
                with open(dst_path / relpath, "xb", buffering=0) as out:
                    digest = copier.copy(src_path / relpath, out, size)
                if digest is not None:
                    digests[relpath] = digest
            for relpath, _ in files if fsync else ():
                # A second pass: the writeback started while copying has had time to finish.
                _fsync_path(dst_path / relpath)
                copier.check()
            return digests

        os.mkdir(dst_path)
        with _removed_on_error(dst_path, shutil.rmtree):
            for relpath in dirs:
                os.mkdir(dst_path / relpath)
            sources = [(relpath, src_path / relpath, size) for relpath, size in big]
            digests = _copy_while_hashing(copy_tree, sources, algorithm, progress, fsync, writeback)
            for relpath in ("", *dirs) if fsync else ():
                _fsync_path(dst_path / relpath)
            tree = DirectoryDigest(algorithm)
            for relpath, size in files:
                tree.add(relpath, size, digests[relpath])
            checksum = tree.result()
    if fsync:
        _fsync_path(dst_path.parent)
    return checksum
