"""Start writing dirty file data to disk early, so that a later ``fsync`` has less to wait for.

Linux's ``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)`` queues the dirty
pages of a range for writeback and returns without waiting for them.  Kicking each chunk of
a large copy (or each file of a tree) this way lets the disk work while the copy goes on, and
the ``fsync`` that makes the data durable then mostly waits for I/O already under way (measured
on the development VM: 4 GiB copy + fsync 8.7-9.1 s without kicks, 7.1 s with; 1,000 small
files fchmod+fsync each 0.13-0.15 s, kick all then fsync all 0.07-0.09 s).

It is only a hint: it makes nothing durable by itself (``fsync`` still must follow) and its
errors are ignored, because a real write error is reported again by that ``fsync``.  Where
the call does not exist (macOS, other systems) :func:`start_writeback` does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

__all__ = ["SYNC_FILE_RANGE_WRITE", "start_writeback"]

#: From <linux/fs.h>: start writeback of dirty pages in the range, do not wait for it.
SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range``, resolved once; None where it does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    # glibc and musl both declare the offsets as 64-bit (off64_t / off_t) on every target.
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Queue the dirty pages of ``fd`` in ``[offset, offset + length)`` for writeback.

    ``length`` 0 means "to the end of the file".  Returns at once (unless the device's
    queue is full); a no-op where unsupported, and failures are ignored (see module doc).
    """
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, SYNC_FILE_RANGE_WRITE)
