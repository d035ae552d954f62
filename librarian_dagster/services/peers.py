"""Peer librarians as the catalogue records them, and the credentials we call them with.

A peer row holds its URL, our account name on it and that account's password, encrypted
with this librarian's secret key (``LIBRARIAN_SECRET_KEY`` or the 0600 key file that
``librarian init`` writes): the catalogue, its backups and ``psql`` never show it in clear.
The Fernet key is derived from the secret with HKDF, so the secret itself is used for
nothing else. ``PeerAccess`` keeps the decrypted password out of its repr, and so out of
logs and tracebacks.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Librarian
from librarian_dagster.services.errors import NotFound, Unavailable
from librarian_dagster.settings import SECRET_KEY_ENV, LibrarianSettings

_HKDF_INFO = b"librarian_dagster/peer-credentials/v1"


@lru_cache(maxsize=4)
def _fernet(secret: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def _cipher(settings: LibrarianSettings) -> Fernet:
    secret = settings.secret_key()
    if not secret:
        raise Unavailable(
            f"no secret key: run `librarian init` (it writes {settings.secret_key_file}) "
            f"or set {SECRET_KEY_ENV}"
        )
    return _fernet(secret)


def encrypt_password(settings: LibrarianSettings, password: str) -> bytes:
    return _cipher(settings).encrypt(password.encode())


def decrypt_password(settings: LibrarianSettings, token: bytes, peer: str) -> str:
    try:
        return _cipher(settings).decrypt(token).decode()
    except InvalidToken:
        raise Unavailable(
            f"cannot decrypt the password of peer {peer!r}: the secret key is not the one it "
            "was stored with; set the peer's password again"
        ) from None


@dataclass(frozen=True)
class PeerAccess:
    """How to call one peer: its URL and our account there."""

    name: str
    url: str
    user: str
    password: str = field(repr=False)
    transfers_enabled: bool = True


def get_peer(session: Session, name: str) -> Librarian:
    peer = session.scalar(select(Librarian).where(Librarian.name == name))
    if peer is None:
        raise NotFound(f"no peer named {name!r}")
    return peer


def peer_access(session: Session, settings: LibrarianSettings, name: str) -> PeerAccess:
    peer = get_peer(session, name)
    return PeerAccess(
        name=peer.name,
        url=peer.url,
        user=peer.remote_user,
        password=decrypt_password(settings, peer.encrypted_password, peer.name),
        transfers_enabled=peer.transfers_enabled,
    )
