"""The ``peers`` resource: clients for the peer librarians the catalogue knows.

A run that talks to a peer (asks it to stage a batch, reports a finished clone, delivers a
callback from the outbox) gets a ``LibrarianClient`` from here: the same client users
script with, logged in as our account on that peer with the password decrypted from the
catalogue (``services.peers``). The password is never logged or returned.
"""

from __future__ import annotations

from librarian_dagster.client import LibrarianClient
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.peers import PeerAccess, peer_access


class PeersResource(CatalogueResource):
    """``peers.client(name)``: a client for that peer (close it, or use it in ``with``)."""

    timeout_seconds: float = 60.0

    def access(self, name: str) -> PeerAccess:
        with self.session() as session:
            return peer_access(session, self.settings, name)

    def client(self, name: str) -> LibrarianClient:
        access = self.access(name)
        return LibrarianClient(
            access.url, access.user, access.password, timeout=self.timeout_seconds
        )
