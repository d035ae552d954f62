"""Bridge an ASGI request body (async chunks) to a blocking file object for a worker thread.

Streamed uploads are written by ordinary blocking code (``storage.movers.receive``) running in a
worker thread; this reader pulls the next chunk from the event loop only when the thread asks
for it, so the body is never buffered beyond one chunk and backpressure reaches the client.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import anyio.from_thread


class AsyncBodyReader(io.RawIOBase):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        while not self._done and not self._pending:
            try:
                chunk = anyio.from_thread.run(self._chunks.__anext__)
            except StopAsyncIteration:
                self._done = True
                return False
            self._pending = memoryview(chunk)
        return bool(self._pending)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._next_chunk():
            return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
