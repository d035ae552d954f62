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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import (
    CallbackOutbox,
    IncomingTransfer,
    Librarian,
    OutgoingTransfer,
    RemoteInstance,
    TransferBatch,
)
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceError,
    Unavailable,
)
from librarian_dagster.services.movers import require_mover
from librarian_dagster.settings import SECRET_KEY_ENV, LibrarianSettings
from librarian_dagster.states import OUTGOING_PENDING, MoverName, UserLevel
from librarian_dagster.wire import (
    CloneStageRequest,
    CloneStageResponse,
    CloneStatusRequest,
    CloneStatusResponse,
    PeerCheck,
    PeerCreate,
    PeerInfo,
    PeerUpdate,
)
from librarian_dagster.wire.integrity import FileValidation

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
    peer_id: int | None = None
    mover: str = "local"


def get_peer(session: Session, name: str, *, for_update: bool = False) -> Librarian:
    statement = select(Librarian).where(Librarian.name == name)
    if for_update:
        statement = statement.with_for_update()
    peer = session.scalar(statement)
    if peer is None:
        raise NotFound(f"no peer named {name!r}")
    return peer


def access_of(settings: LibrarianSettings, peer: Librarian) -> PeerAccess:
    return PeerAccess(
        name=peer.name,
        url=peer.url,
        user=peer.remote_user,
        password=decrypt_password(settings, peer.encrypted_password, peer.name),
        transfers_enabled=peer.transfers_enabled,
        peer_id=peer.id,
        mover=peer.mover,
    )


def peer_access(session: Session, settings: LibrarianSettings, name: str) -> PeerAccess:
    return access_of(settings, get_peer(session, name))


# -- identity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerIdentity:
    """What a peer says about itself (``/ping``) and about our account there (``/account``)."""

    librarian: str
    account: str
    level: UserLevel
    version: str


class PeerLink(Protocol):
    """Calls to one peer, as the outer layers make them (HTTP with our account there).

    Every method raises ``PeerCallFailed`` when the peer does not answer as it should;
    the core never sees the HTTP client.
    """

    def identify(self) -> PeerIdentity: ...

    def stage(self, request: CloneStageRequest) -> CloneStageResponse: ...

    def query(self, request: CloneStatusRequest) -> CloneStatusResponse: ...

    def post(self, route: str, payload: dict[str, Any]) -> None: ...

    def validate(self, name: str) -> FileValidation:
        """Ask the peer to re-read its copies of ``name`` now."""
        ...

    def close(self) -> None: ...


PeerLinks = Callable[[PeerAccess], PeerLink]


def check_identity(access: PeerAccess, identity: PeerIdentity) -> None:
    """Refuse a peer that is not who it should be, or that knows us by another name."""
    if identity.librarian != access.name:
        raise InvalidRequest(
            f"the librarian at {access.url} calls itself {identity.librarian!r}, not "
            f"{access.name!r}: check the URL and the name"
        )
    if identity.account != access.user:
        raise InvalidRequest(
            f"{access.name} took the login as {identity.account!r}, not {access.user!r}"
        )


def probe(links: PeerLinks, access: PeerAccess) -> PeerIdentity:
    """Ask the peer who it is and who we are there; raises when it is not as it should be."""
    link = links(access)
    try:
        identity = link.identify()
    finally:
        link.close()
    check_identity(access, identity)
    return identity


# -- administration ---------------------------------------------------------------------


@dataclass(frozen=True)
class PeerSummary:
    """A peer with the counts ``GET /peers`` and ``librarian peer list`` show."""

    peer: Librarian
    books_in_flight: int
    books_held: int
    callbacks_waiting: int


def add_peer(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    request: PeerCreate,
    *,
    links: PeerLinks | None = None,
) -> Librarian:
    """Record a peer (its password encrypted); with ``links`` and ``request.check``, the
    peer is asked first who it is and who we are there, and a peer that does not answer as
    itself, or refuses our login, is not recorded (502 or 400). The peer is asked outside
    any transaction: a peer that does not answer must not hold the catalogue's write lock.
    """
    if request.name == settings.name:
        raise InvalidRequest(f"{request.name!r} is this librarian's own name")
    mover = request.mover.value if request.mover is not None else settings.default_mover
    require_mover(settings, mover)
    with catalogue.session() as session:
        _refuse_existing(session, request.name)
    checked = links is not None and request.check
    if checked:
        assert links is not None
        probe(links, PeerAccess(request.name, request.url, request.user, request.password))
    with catalogue.session() as session:
        _refuse_existing(session, request.name)  # (added meanwhile by someone else?)
        peer = Librarian(
            name=request.name,
            url=request.url,
            remote_user=request.user,
            encrypted_password=encrypt_password(settings, request.password),
            mover=mover,
            transfers_enabled=request.transfers_enabled,
            last_seen_at=datetime.now(UTC) if checked else None,
        )
        session.add(peer)
        session.flush()
        return peer


def _refuse_existing(session: Session, name: str) -> None:
    if session.scalar(select(Librarian.id).where(Librarian.name == name)) is not None:
        raise Conflict(f"a peer named {name!r} exists; change it with PATCH or `peer set`")


def update_peer(
    session: Session, settings: LibrarianSettings, name: str, request: PeerUpdate
) -> Librarian:
    """Change what the request sets; pausing (``transfers_enabled: false``) stops new batches
    only: books in flight go on, and callbacks flow both ways."""
    peer = get_peer(session, name, for_update=True)
    if request.url is not None:
        peer.url = request.url
    if request.user is not None:
        peer.remote_user = request.user
    if request.password is not None:
        peer.encrypted_password = encrypt_password(settings, request.password)
    if request.mover is not None:
        require_mover(settings, request.mover.value)
        peer.mover = request.mover.value
    if request.transfers_enabled is not None:
        peer.transfers_enabled = request.transfers_enabled
    session.flush()
    return peer


def remove_peer(session: Session, name: str) -> None:
    """Forget a peer nothing refers to; else 409 saying what does (pause it instead)."""
    peer = get_peer(session, name, for_update=True)
    in_flight, held, owed = _counts(session, [peer.id])[peer.id]
    incoming = session.scalar(
        select(func.count())
        .select_from(IncomingTransfer)
        .where(IncomingTransfer.librarian_id == peer.id)
    )
    batches = session.scalar(
        select(func.count()).select_from(TransferBatch).where(TransferBatch.librarian_id == peer.id)
    )
    if held or in_flight or owed or incoming or batches:
        raise Conflict(
            f"{name} is part of the catalogue's history ({held} books it holds, {in_flight} in "
            f"flight, {owed} callbacks owed, {incoming or 0} books received from it, "
            f"{batches or 0} batches): pause it instead (`librarian peer pause {name}`)"
        )
    session.delete(peer)
    session.flush()


def _counts(session: Session, peer_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """(books in flight, books held, callbacks waiting) per peer: three grouped queries."""

    def grouped(column: Any, *where: Any) -> dict[int, int]:
        rows = session.execute(
            select(column, func.count()).where(column.in_(peer_ids), *where).group_by(column)
        )
        return {int(key): int(count) for key, count in rows}

    held = grouped(RemoteInstance.librarian_id)
    in_flight = grouped(
        OutgoingTransfer.librarian_id, OutgoingTransfer.status.in_(OUTGOING_PENDING)
    )
    owed = grouped(CallbackOutbox.librarian_id, CallbackOutbox.delivered_at.is_(None))
    return {
        peer_id: (in_flight.get(peer_id, 0), held.get(peer_id, 0), owed.get(peer_id, 0))
        for peer_id in peer_ids
    }


def peer_summary(session: Session, name: str) -> PeerSummary:
    peer = get_peer(session, name)
    return PeerSummary(peer, *_counts(session, [peer.id])[peer.id])


def list_peers(session: Session) -> list[PeerSummary]:
    peers = session.scalars(select(Librarian).order_by(Librarian.name)).all()
    counts = _counts(session, [peer.id for peer in peers])
    return [PeerSummary(peer, *counts[peer.id]) for peer in peers]


def record_contact(session: Session, peer_id: int, error: str | None) -> None:
    """Remember how the last call to a peer went (``peer list`` shows it)."""
    peer = session.get(Librarian, peer_id)
    if peer is None:
        return
    now = datetime.now(UTC)
    if error is None:
        peer.last_seen_at = now
        peer.last_error = None
        peer.last_error_at = None
    else:
        peer.last_error = error[:2000]
        peer.last_error_at = now


def calling_peer(session: Session, principal: Principal) -> Librarian | None:
    """The peer a caller is (its account on us is named after it), or None."""
    return session.scalar(select(Librarian).where(Librarian.name == principal.name))


def require_calling_peer(session: Session, principal: Principal) -> Librarian:
    """The caller's peer row, or 403: clone requests come from peers only."""
    peer = calling_peer(session, principal)
    if peer is None:
        raise Forbidden(
            f"{principal.name!r} is not a peer of this librarian: peers call with an account "
            "named after them (add it with `librarian peer add`)"
        )
    return peer


def peer_info(summary: PeerSummary) -> PeerInfo:
    """What ``GET /peers`` and ``librarian peer list`` show of a peer (never its password)."""
    peer = summary.peer
    return PeerInfo(
        name=peer.name,
        url=peer.url,
        user=peer.remote_user,
        mover=MoverName(peer.mover),
        transfers_enabled=peer.transfers_enabled,
        created_at=peer.created_at,
        last_seen=peer.last_seen_at,
        last_error=peer.last_error,
        last_error_at=peer.last_error_at,
        books_in_flight=summary.books_in_flight,
        books_held=summary.books_held,
        callbacks_waiting=summary.callbacks_waiting,
    )


def check_peer(
    catalogue: Catalogue, settings: LibrarianSettings, name: str, links: PeerLinks
) -> PeerCheck:
    """Ask a recorded peer who it is and who we are there; remember how it went."""
    with catalogue.session() as session:
        peer = get_peer(session, name)
        access = access_of(settings, peer)
    try:
        identity = probe(links, access)
    except ServiceError as error:
        with catalogue.session() as session:
            record_contact(session, peer.id, error.detail)
        return PeerCheck(name=name, url=access.url, ok=False, error=error.detail)
    with catalogue.session() as session:
        record_contact(session, peer.id, None)
    return PeerCheck(
        name=name,
        url=access.url,
        ok=True,
        librarian=identity.librarian,
        account=identity.account,
        level=identity.level,
        version=identity.version,
    )
