"""Leftover staging per store, counted at most every few minutes for ``/ping``."""

from __future__ import annotations

import threading
import time

from librarian_dagster.storage.local_store import LocalStore

LEFTOVER_STAGING_SECONDS = 7 * 24 * 3600
# Counting leftovers walks every staging tree; /ping is unauthenticated and probed often, so
# a count is reused for this long (uploads a week old do not appear by the second).
LEFTOVER_COUNT_SECONDS = 300.0


class LeftoverCounts:
    """Leftover staging per store, counted at most once per ``LEFTOVER_COUNT_SECONDS``.

    One per app; the lock makes concurrent probes wait for one walk instead of each walking.
    """

    def __init__(self, ttl: float = LEFTOVER_COUNT_SECONDS) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def count(self, store: LocalStore) -> int:
        with self._lock:
            counted = self._counts.get(store.name)
            now = time.monotonic()
            if counted is None or now - counted[0] > self._ttl:
                counted = (now, len(store.leftover_staging(LEFTOVER_STAGING_SECONDS)))
                self._counts[store.name] = counted
            return counted[1]
