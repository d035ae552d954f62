"""Who is streaming an upload body right now: one writer per upload, a few per user.

A body in flight holds a worker thread (it is written by blocking code) and a slot here until
it ends. Three limits keep one client from stopping the API for the others:

- one writer per upload: a second ``PUT`` to an upload whose body is still arriving gets
  409 (before, both answered 200 and the first one's bytes were silently replaced), and so
  does a commit (the route checks that the caller owns the upload first); a cancel goes
  through, and leaves the removal of the data to the body's request, which does it once the
  body has ended (``leave_to_body``): one remover, never two on a growing tree, and never
  none (the cancel hands over under the same lock that the body's end takes);
- ``per_user`` bodies at once per user (429 beyond, with ``Retry-After``);
- ``total`` bodies at once overall, on a thread limiter of their own, so stalled uploads can
  never take the threads that authentication and the other routes run on; the last quarter
  of them only for users with no body in flight, so a few accounts holding all their
  per-user slots cannot shut every other user out.

In memory, per API process (the librarian runs one).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio

from librarian_dagster.services.errors import Conflict, TooManyRequests


class UploadSlots:
    def __init__(self, per_user: int, total: int) -> None:
        self._per_user = per_user
        self._total = total
        self._for_newcomers = total // 4
        self._active: set[int] = set()
        self._by_user: Counter[str] = Counter()
        # Work handed to a body's request (``leave_to_body``), to run once the body ended.
        self._left: defaultdict[int, list[Callable[[], None]]] = defaultdict(list)
        self._lock = threading.Lock()
        self.limiter = anyio.CapacityLimiter(total)

    def active_ids(self) -> frozenset[int]:
        """The uploads whose body is arriving now."""
        with self._lock:
            return frozenset(self._active)

    def leave_to_body(self, upload_id: int, action: Callable[[], None]) -> bool:
        """Give ``action`` to the request whose body for this upload is arriving, to run once
        the body has ended; False if none is arriving (the caller runs it itself)."""
        with self._lock:
            if upload_id not in self._active:
                return False
            self._left[upload_id].append(action)
            return True

    def refuse_if_receiving(self, upload_id: int, what: str) -> None:
        """409 while a body for this upload is arriving: it cannot be cancelled or committed."""
        with self._lock:
            if upload_id in self._active:
                raise Conflict(
                    f"upload {upload_id} is receiving a body; it can be {what} once that "
                    "request has ended"
                )

    @contextmanager
    def hold(self, upload_id: int, user: str) -> Iterator[list[Callable[[], None]]]:
        """Hold the slot of this upload (and one of the user's) while its body arrives.

        Refused at once (429) when every upload thread is taken: a request must not wait
        without a deadline for one, holding its slot meanwhile. The list it gives is filled,
        as the slot is released, with the work left to this request (``leave_to_body``),
        for the request to run after the block.
        """
        with self._lock:
            free = self._total - len(self._active)  # each held body takes a thread token
            if free < 1:
                raise TooManyRequests(
                    "every upload thread is busy; send the body again in a moment", retry_after=5
                )
            if self._by_user[user] > 0 and free <= self._for_newcomers:
                raise TooManyRequests(
                    f"{user!r} is already sending a body and the upload threads left are kept "
                    "for users who are not; send this one when one of yours ends",
                    retry_after=5,
                )
            if upload_id in self._active:
                raise Conflict(
                    f"upload {upload_id} is already receiving a body; wait for that request "
                    "to end (or cancel the upload) before sending again"
                )
            if self._by_user[user] >= self._per_user:
                raise TooManyRequests(
                    f"{user!r} is already sending {self._per_user} upload bodies at once; "
                    "send this one when one of them ends",
                    retry_after=5,
                )
            self._active.add(upload_id)
            self._by_user[user] += 1
        left: list[Callable[[], None]] = []
        try:
            yield left
        finally:
            with self._lock:
                left += self._left.pop(upload_id, [])
                self._active.discard(upload_id)
                self._by_user[user] -= 1
                if self._by_user[user] <= 0:
                    del self._by_user[user]
