"""The shared-filesystem mover: copy a book while hashing it (``copy_and_hash``).

The client copies into a staging directory with it; the librarian's own movers (SneakerNet
drives, local clones) will copy with it too. It returns the source's checksum, so the copy
costs no second pass just to know what was sent, and whoever receives the copy verifies it
against that checksum: the check stays end to end.

It reads a big file twice: the kernel copies the bytes (``copy_file_range``) while a second
thread hashes the source, because on our VMs writing from user space (read, hash, write
into fresh page cache) is much slower than the kernel's copy, and the second read is cheap
from the page cache. Small files are still read once, hashed and written (see the comment
above :data:`ONE_PASS_MAX`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from librarian_dagster.storage.checksums import (
    CHUNK_SIZE,
    DEFAULT_ALGORITHM,
    Cancelled,
    Checksum,
    DirectoryDigest,
    Progress,
    StrPath,
    book_status,
    new_buffer,
    new_hasher,
    pump,
    scan_tree,
    write_all,
)
from librarian_dagster.storage.posix import fsync_path, start_writeback

# 64 MiB per copy_file_range call: the copy stays in the kernel, writeback of each chunk
# starts right after it, progress moves ~15 times a second.  16-256 MiB measured alike here
# (the disk, not the chunk size, sets the pace).
COPY_CHUNK_SIZE = 64 << 20
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
            self._buffer = new_buffer()
        return self._buffer

    def _copy_in_one_pass(self, src: Path, out: io.RawIOBase, size: int) -> str:
        hasher = new_hasher(self.algorithm)
        copied = pump(src, hasher, self._buffer_for_copy(), self.progress, out)
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
            write_all(out, buffer[:n])
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
    buffer = new_buffer()
    digests: dict[str, str] = {}
    for key, path, size in sources:
        if stop.is_set():
            raise Cancelled
        hasher = new_hasher(algorithm)
        read = pump(path, hasher, buffer, None, stop=stop)
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


@contextlib.contextmanager
def _removed_on_error(path: Path, remove: Callable[[Path], object]) -> Iterator[None]:
    """Undo a half-made copy: nobody may trust it, and it would block a retry."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            remove(path)
        raise


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
    status = book_status(src_path)
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
                fsync_path(dst_path / relpath)
                copier.check()
            return digests

        os.mkdir(dst_path)
        with _removed_on_error(dst_path, shutil.rmtree):
            for relpath in dirs:
                os.mkdir(dst_path / relpath)
            sources = [(relpath, src_path / relpath, size) for relpath, size in big]
            digests = _copy_while_hashing(copy_tree, sources, algorithm, progress, fsync, writeback)
            for relpath in ("", *dirs) if fsync else ():
                fsync_path(dst_path / relpath)
            tree = DirectoryDigest(algorithm)
            for relpath, size in files:
                tree.add(relpath, size, digests[relpath])
            checksum = tree.result()
    if fsync:
        fsync_path(dst_path.parent)
    return checksum
