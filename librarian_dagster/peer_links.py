"""``services.peers.PeerLink`` over HTTP: how this librarian calls its peers.

The core says what to ask a peer (stage these books, what became of those, a callback from
the outbox); this module says how: a ``LibrarianClient`` logged in as our account on the
peer, every failure translated into ``PeerCallFailed`` (with the peer's HTTP status, if it
answered) so the core never sees the HTTP client. The API, the CLI and Dagster runs all
call peers through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from librarian_dagster.client import LibrarianClient, LibrarianError
from librarian_dagster.client.errors import read_model
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.peers import PeerAccess, PeerIdentity, PeerLinks
from librarian_dagster.wire import (
    CloneStageRequest,
    CloneStageResponse,
    CloneStatusRequest,
    CloneStatusResponse,
)
from librarian_dagster.wire.clones import CLONES_STAGE, CLONES_STATUS
from librarian_dagster.wire.integrity import FileValidation, validate_path

VALIDATE_TIMEOUT = httpx.Timeout(3600.0, connect=10.0)

T = TypeVar("T")


class HttpPeerLink:
    """Calls to one peer over its REST API, as our account there."""

    def __init__(self, access: PeerAccess, timeout: float, **client_options: Any) -> None:
        """``client_options`` go to the ``LibrarianClient`` (tests pass ``http_client``)."""
        self.name = access.name
        self._client = LibrarianClient(
            access.url, access.user, access.password, timeout=timeout, **client_options
        )

    def __repr__(self) -> str:
        return f"HttpPeerLink({self.name!r}, {self._client!r})"

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except LibrarianError as error:
            raise PeerCallFailed(f"{self.name} ({what}): {error}", error.status) from None

    def _call(self, what: str, call: Callable[[], T]) -> T:
        with self._calling(what):
            return call()

    def identify(self) -> PeerIdentity:
        with self._calling("who are you"):
            ping = self._client.ping()
            account = self._client.account()
        return PeerIdentity(ping.name, account.name, account.level, ping.version)

    def stage(self, request: CloneStageRequest) -> CloneStageResponse:
        return self._call(
            "stage",
            lambda: read_model(
                self._client.request("POST", CLONES_STAGE, json=request.model_dump(mode="json")),
                CloneStageResponse,
            ),
        )

    def query(self, request: CloneStatusRequest) -> CloneStatusResponse:
        return self._call(
            "clone status",
            lambda: read_model(
                self._client.request("POST", CLONES_STATUS, json=request.model_dump(mode="json")),
                CloneStatusResponse,
            ),
        )

    def post(self, route: str, payload: dict[str, Any]) -> None:
        with self._calling(route):
            self._client.request("POST", route, json=payload)

    def validate(self, name: str) -> FileValidation:
        # Re-reading a book of 10-20 GB takes a while: far longer than a callback.
        return self._call(
            "validate",
            lambda: read_model(
                self._client.request("POST", validate_path(name), timeout=VALIDATE_TIMEOUT),
                FileValidation,
            ),
        )

    def close(self) -> None:
        self._client.close()


def http_links(timeout: float) -> PeerLinks:
    """A ``PeerLinks`` factory: one ``HttpPeerLink`` per peer and use."""

    def link(access: PeerAccess) -> HttpPeerLink:
        return HttpPeerLink(access, timeout)

    return link
