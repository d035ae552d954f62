"""The client's exceptions: one type (``LibrarianError``) for everything a caller can act on.

A script using the client should need a single ``except LibrarianError``: HTTP problems
(with the server's status and RFC 9457 problem), connection failures, local books that
cannot be uploaded, and bad client configuration all land here. Messages are one line so the
CLI can print them as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from librarian_dagster.wire import Problem, UploadInfo

T = TypeVar("T")


def one_line(text: str) -> str:
    """Collapse whitespace (including newlines) so a message always fits on one line."""
    return " ".join(text.split())


class LibrarianError(Exception):
    """A request the librarian (or the client, before asking it) refused or could not do.

    ``status`` is the HTTP status for server answers and None for connection, local and
    configuration errors; ``problem`` is the server's problem details when it sent one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, problem: Problem | None = None
    ) -> None:
        self.message = one_line(message)
        super().__init__(self.message)
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        """The server's own explanation if it gave one, else the whole message."""
        if self.problem is not None and self.problem.detail:
            return self.problem.detail
        return self.message


class ConnectionFailed(LibrarianError):
    """The librarian could not be reached or did not answer in time (no status)."""


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def read_model(response: httpx.Response, model: type[T]) -> T:
    """The response body as ``model``; anything else means we are not talking to a librarian."""
    try:
        return _adapter(model).validate_json(response.content)  # type: ignore[no-any-return]
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        first = one_line(str(error)).split(" [", 1)[0][:160]
        raise LibrarianError(
            f"unexpected answer from {response.request.url} (is this a librarian?): {first}"
        ) from None


class ClientConfigError(LibrarianError):
    """``client.toml`` is unreadable or invalid, or a connection's password is not set."""


# Failures named in an UploadFailed message (all of them are in ``.failures``).
MAX_LISTED = 10


@dataclass(frozen=True)
class UploadFailure:
    """Why one book of an upload did not end up stored."""

    name: str
    reason: str
    upload_id: int | None = None
    status: int | None = None


class UploadFailed(LibrarianError):
    """One or more uploads did not get stored; ``failures`` says which and why.

    ``stored`` holds the uploads of the same call that did succeed (stored; or committed,
    when the caller did not wait), so a caller of ``upload_many`` can tell exactly what to
    retry.
    """

    def __init__(
        self, failures: Sequence[UploadFailure], stored: Sequence[UploadInfo] = ()
    ) -> None:
        self.failures = list(failures)
        self.stored = list(stored)
        total = len(self.failures) + len(self.stored)
        if total == 1:
            only = self.failures[0]
            message = f"upload of {only.name!r} failed: {only.reason}"
        else:
            shown = self.failures[:MAX_LISTED]
            listed = "; ".join(f"{f.name!r}: {f.reason}" for f in shown)
            if len(self.failures) > len(shown):
                listed += f"; and {len(self.failures) - len(shown)} more"
            message = f"{len(self.failures)} of {total} uploads failed: {listed}"
        statuses = {f.status for f in self.failures}
        super().__init__(message, status=statuses.pop() if len(statuses) == 1 else None)

    @property
    def reason(self) -> str:
        """The reason of the first failure: what the server said for a single upload."""
        return self.failures[0].reason
