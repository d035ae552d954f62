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

    def expired(self, now: float, window: float) -> bool:
        return now >= self.blocked_until and now - self.last_at > window


class LoginThrottle:
    def __init__(self, free: int = 5, window: float = 300.0, max_delay: float = 300.0) -> None:
        self._free = free
        self._window = window
        self._max_delay = max_delay
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: tuple[str, ...], now: float | None = None) -> float:
        """Seconds until these keys may try again (0: go ahead)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [
                entry.blocked_until - now
                for key in keys
                if (entry := self._failures.get(key)) is not None
            ]
        return max([0.0, *waits])

    def failed(self, keys: tuple[str, ...], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= _MAX_KEYS:
                self._forget_old(now)
            for key in keys:
                entry = self._failures.get(key)
                if entry is None or entry.expired(now, self._window):
                    entry = self._failures[key] = _Failures(0, now, now)
                entry.count += 1
                entry.last_at = now
                free = self._free * (ADDRESS_FACTOR if key.startswith(ADDRESS_PREFIX) else 1)
                over = entry.count - free
                if over >= 0:  # the next attempt after the free ones waits 1 s, then 2, 4, ...
                    entry.blocked_until = now + min(2.0**over, self._max_delay)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _forget_old(self, now: float) -> None:
        stale = [key for key, entry in self._failures.items() if entry.expired(now, self._window)]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= _MAX_KEYS:  # a spray of addresses: start over
            self._failures.clear()
