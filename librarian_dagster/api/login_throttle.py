"""Failed logins, counted per user name and per client address, slow the guesser down.

Each wrong password costs the server an argon2 verification (~0.1 s of CPU, on purpose), so a
flood of them slows every other user. After ``free`` failures (each within ``window`` seconds
of the last), a key (user name or client address) must wait before its next attempt is even
verified: 1 s, then 2, 4, ... up to ``max_delay`` seconds; attempts in that time are
answered 429 with ``Retry-After`` at no cost. A correct password for a user resets that
user's count (not the address's: one valid account must not let its owner guess at
others). The middleware checks the positive credential cache *before* the throttle, so a
user whose correct credentials are cached is never held back by someone guessing at their
name.

A client address gets ``ADDRESS_FACTOR`` times as many free failures as a user name: many
users can share one address (a NAT, a proxy, the librarian's own host), and an address that is
held back holds back their fresh logins too (cached ones still pass).

In memory, per API process (the librarian runs one): a restart forgets the counts, which
costs an attacker nothing they could not get by waiting for the window to pass.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

_MAX_KEYS = 100_000
ADDRESS_FACTOR = 4
ADDRESS_PREFIX = "address:"


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float
    pending: int = 0  # verifications in flight

    def expired(self, now: float, window: float) -> bool:
        return now >= self.blocked_until and now - self.last_at > window


class LoginThrottle:
    def __init__(self, free: int = 5, window: float = 300.0, max_delay: float = 300.0) -> None:
        self._free = free
        self._window = window
        self._max_delay = max_delay
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def _free_for(self, key: str) -> int:
        return self._free * (ADDRESS_FACTOR if key.startswith(ADDRESS_PREFIX) else 1)

    def begin(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """Reserve one verification for these keys: 0, or the seconds to wait (refused).

        Attempts in flight count against the free ones, so a burst of parallel guesses
        cannot all be verified before the first failure is recorded. Every ``begin`` that
        returns 0 must be followed by ``failed``, ``succeeded`` or ``abandoned``.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= _MAX_KEYS:
                self._forget_old(now)
            entries = []
            for key in keys:
                entry = self._failures.get(key)
                if entry is None or (entry.pending == 0 and entry.expired(now, self._window)):
                    entry = self._failures[key] = _Failures(0, now, now)
                entries.append((key, entry))
            wait = max(0.0, *(entry.blocked_until - now for _key, entry in entries))
            if wait > 0:
                return wait
            for key, entry in entries:
                if entry.count + entry.pending >= max(1, self._free_for(key)):
                    return 1.0  # one at a time at the edge: the next answer decides
            for _key, entry in entries:
                entry.pending += 1
            return 0.0

    def failed(self, keys: tuple[str, ...], now: float | None = None) -> None:
        """A verification begun for these keys failed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                entry = self._failures.setdefault(key, _Failures(0, now, now))
                entry.pending = max(0, entry.pending - 1)
                entry.count += 1
                entry.last_at = now
                over = entry.count - self._free_for(key)
                if over >= 0:  # the next attempt after the free ones waits 1 s, then 2, 4, ...
                    entry.blocked_until = now + min(2.0**over, self._max_delay)

    def abandoned(self, keys: tuple[str, ...]) -> None:
        """A verification begun for these keys ended without an answer (an error)."""
        with self._lock:
            for key in keys:
                if (entry := self._failures.get(key)) is not None:
                    entry.pending = max(0, entry.pending - 1)

    def succeeded(self, keys: tuple[str, ...]) -> None:
        """A verification begun for these keys succeeded: the user's failures are forgiven
        (``keys[0]``); the address keeps its count (one valid account must not let its owner
        guess at others)."""
        with self._lock:
            for index, key in enumerate(keys):
                entry = self._failures.get(key)
                if entry is None:
                    continue
                entry.pending = max(0, entry.pending - 1)
                if index == 0 and entry.pending == 0:
                    del self._failures[key]

    def _forget_old(self, now: float) -> None:
        stale = [
            key
            for key, entry in self._failures.items()
            if entry.pending == 0 and entry.expired(now, self._window)
        ]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= _MAX_KEYS:  # a spray of names or addresses: forget those,
            for key in [k for k in self._failures if not self._failures[k].pending]:
                if key.startswith(ADDRESS_PREFIX) or self._failures[key].count < self._free:
                    del self._failures[key]  # but keep the users already held back
