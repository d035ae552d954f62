"""Reading a file in one thread while another hashes what was read: the two overlap.

``checksums.pump`` reads a chunk, then hashes it, then reads the next: on a cold disk the
reads and the hashing take turns. Here a second thread keeps reading into a few buffers
while the caller hashes the one before (``readinto`` releases the GIL, and so does
xxhash's ``update``), so a verification runs at the slower of the two, not their sum.

From the page cache the thread only costs: a hand-over is as dear as a small read, and a
chunk large enough to amortise it has left the CPU cache by the time it is hashed. So
``pump_cached_first`` reads what is cached in place first (``RWF_NOWAIT`` says, without
waiting, whether the next chunk is in memory) and starts the thread at the first chunk
that would wait for the disk. Used where a process does nothing but verify (the
integrity pass), for large files only.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol


class _Updatable(Protocol):
    def update(self, data: memoryview, /) -> object: ...


# Linux only; elsewhere every file goes straight to the read-ahead thread.
_NOWAIT = getattr(os, "RWF_NOWAIT", None)
# What a read that would block, or a file system without RWF_NOWAIT, raises.
_WOULD_WAIT = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EOPNOTSUPP, errno.EINVAL}


def pump_cached_first(
    src: str | os.PathLike[str],
    hasher: _Updatable,
    buffer: memoryview,
    read_ahead: Callable[[], Sequence[memoryview]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Hash the cached head of ``src`` through ``buffer``, the rest read ahead; the bytes.

    ``read_ahead`` makes the thread's buffers, only once they are needed.
    """
    size = 0
    with open(src, "rb", buffering=0) as f:
        fd = f.fileno()
        while _NOWAIT is not None:
            try:
                n = os.preadv(fd, [buffer], size, _NOWAIT)
            except OSError as error:
                if error.errno not in _WOULD_WAIT:
                    raise
                break
            if not n:
                if size >= os.fstat(fd).st_size:
                    return size
                break  # 0 short of the end: not trusted as the end; read it plainly
            hasher.update(buffer[:n])
            size += n
            if progress is not None:
                progress(n)
        # The same open file (a duplicate descriptor): never the head of one and the tail
        # of another, should the path be renamed over meanwhile.
        return size + pump_overlapped(os.dup(fd), hasher, read_ahead(), progress, offset=size)


def pump_overlapped(
    src: str | os.PathLike[str] | int,
    hasher: _Updatable,
    buffers: Sequence[memoryview],
    progress: Callable[[int], None] | None = None,
    *,
    offset: int = 0,
) -> int:
    """Stream ``src`` (a path, or a file descriptor it then closes) from ``offset``
    through ``hasher``, read ahead into ``buffers``. Returns the bytes read.
    """
    free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[memoryview, int] | BaseException] = queue.SimpleQueue()
    for buffer in buffers:
        free.put(buffer)
    done = threading.Event()

    def read() -> None:
        try:
            with open(src, "rb", buffering=0) as f:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                f.seek(offset)
                while not done.is_set():
                    buffer = free.get()
                    n = f.readinto(buffer) or 0
                    full.put((buffer, n))
                    if not n:
                        return
        except BaseException as error:  # handed to the hashing thread, raised there
            full.put(error)

    reader = threading.Thread(target=read, name="librarian-read-ahead", daemon=True)
    reader.start()
    size = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            buffer, n = item
            if not n:
                return size
            hasher.update(buffer[:n])
            size += n
            if progress is not None:
                progress(n)
            free.put(buffer)
    finally:
        done.set()
        free.put(buffers[0])  # a reader waiting for a buffer wakes, sees done, ends
        reader.join()
