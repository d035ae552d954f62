"""The ``peers`` resource: how runs and sensors call the peer librarians the catalogue knows.

A run that talks to a peer (asks it to stage a batch, asks about books it never confirmed,
delivers a callback from the outbox) gets ``links()`` from here: ``peer_links.http_links``,
the same ``LibrarianClient`` users script with, logged in as our account on that peer with
the password decrypted from the catalogue (``services.peers``). The password is never
logged or returned.
"""

from __future__ import annotations

from librarian_dagster.client import LibrarianClient
from librarian_dagster.peer_links import http_links
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.peers import PeerAccess, PeerLinks, peer_access


class PeersResource(CatalogueResource):
    """``peers.links()``: calls to any peer; ``peers.client(name)``: a client for one."""

    def access(self, name: str) -> PeerAccess:
        with self.session() as session:
            return peer_access(session, self.settings, name)

    def links(self) -> PeerLinks:
        return http_links(self.settings.transfer.peer_timeout_seconds)

    def client(self, name: str) -> LibrarianClient:
        access = self.access(name)
        return LibrarianClient(
            access.url,
            access.user,
            access.password,
            timeout=self.settings.transfer.peer_timeout_seconds,
        )
