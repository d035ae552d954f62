"""Bridge an ASGI request body (async chunks) to a blocking file object for a worker thread.

Streamed uploads are written by ordinary blocking code (``storage.movers.receive``) running in a
worker thread; this reader pulls the next chunk from the event loop only when the thread asks
for it, so the body is never buffered beyond one chunk and backpressure reaches the client.

A client that stops sending holds that thread: after ``idle_timeout`` seconds without a byte
the read fails with 408, the partial data is removed by the caller, and the thread is free.
A client that sends a byte now and then to dodge that (slowloris) is cut off the same way
once, after twice ``idle_timeout`` seconds, its average rate is below ``min_rate`` bytes/s.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator

import anyio
import anyio.from_thread
from litestar.exceptions import HTTPException, InternalServerException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_408_REQUEST_TIMEOUT


class BodyIdleTimeout(HTTPException):
    status_code = HTTP_408_REQUEST_TIMEOUT


class ClientGone(HTTPException):
    """The client closed the connection mid-body: its doing, not a server error (no 500)."""

    status_code = HTTP_400_BAD_REQUEST


class AsyncBodyReader(io.RawIOBase):
    def __init__(
        self, chunks: AsyncIterator[bytes], idle_timeout: float, min_rate: float = 0.0
    ) -> None:
        self._chunks = chunks
        self._idle_timeout = idle_timeout
        self._min_rate = min_rate
        self._started = time.monotonic()
        self._received = 0
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes:
        with anyio.fail_after(self._idle_timeout):
            return await self._chunks.__anext__()

    def _next_chunk(self) -> bool:
        while not self._done and not self._pending:
            try:
                chunk = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                self._done = True
                return False
            except TimeoutError:
                raise BodyIdleTimeout(
                    detail=f"the body sent nothing for {self._idle_timeout:g} s; send it again"
                ) from None
            except InternalServerException as error:  # Litestar's word for a disconnect
                if "disconnected" not in str(error.detail):
                    raise
                raise ClientGone(detail="the client disconnected before the body ended") from None
            self._pending = memoryview(chunk)
            self._received += len(chunk)
            self._check_rate()
        return bool(self._pending)

    def _check_rate(self) -> None:
        elapsed = time.monotonic() - self._started
        if self._min_rate <= 0 or elapsed < 2 * self._idle_timeout:
            return
        if self._received / elapsed < self._min_rate:
            raise BodyIdleTimeout(
                detail=(
                    f"the body arrives at {self._received / elapsed:.0f} bytes/s, below the "
                    f"{self._min_rate:g} bytes/s this librarian needs; send it again"
                )
            )

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._next_chunk():
            return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
