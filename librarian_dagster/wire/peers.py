"""``/peers`` (admin) and ``/account``: the librarians we clone to, and who a caller is.

``PeerCreate`` is the pinned body of ``POST /api/v2/peers`` (SPEC §5), plus ``check``: the
peer is asked, with these credentials, who it is and who we are there, before anything is
saved. The password is write-only: no response carries it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from librarian_dagster.states import MoverName, UserLevel
from librarian_dagster.wire.common import JsonBool, RequestModel, ResponseModel

PeerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
AccountName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
PeerPassword = Annotated[str, Field(min_length=1, max_length=1024)]
PeerUrl = Annotated[str, Field(min_length=1, max_length=512)]


def check_peer_url(url: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise ValueError("the URL must not hold credentials (give user and password)")
    if parts.query or parts.fragment:
        raise ValueError("the URL must not have a query or fragment")
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError as error:
        raise ValueError(f"bad port: {error}") from None
    return url.rstrip("/")


class PeerCreate(RequestModel):
    """Add a peer: where it is, and our account on it (named after us, level callback)."""

    name: PeerName = Field(description="The peer's own name (what its /ping says).")
    url: PeerUrl = Field(description="Its API, e.g. http://host:8080.")
    user: AccountName = Field(description="Our account on it (named after this librarian).")
    password: PeerPassword
    mover: MoverName | None = Field(
        default=None, description="How books reach it (default from [transfer] default_mover)."
    )
    transfers_enabled: JsonBool = True
    check: JsonBool = Field(
        default=True, description="Ask the peer who it is and who we are there first."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_peer_url(value)


class PeerUpdate(RequestModel):
    """Change a peer; unset fields stay as they are. ``transfers_enabled: false`` pauses it."""

    url: PeerUrl | None = None
    user: AccountName | None = None
    password: PeerPassword | None = None
    mover: MoverName | None = None
    transfers_enabled: JsonBool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_peer_url(value)


class PeerInfo(ResponseModel):
    name: str
    url: str
    user: str
    mover: MoverName
    transfers_enabled: bool
    created_at: datetime
    last_seen: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    # Books on their way to it (outgoing transfers not yet stored or failed).
    books_in_flight: int = 0
    # Books it holds, as far as we know (remote instances).
    books_held: int = 0
    # Callbacks we owe it that it has not taken yet (it may be down).
    callbacks_waiting: int = 0


class PeerList(ResponseModel):
    peers: list[PeerInfo]


class AccountInfo(ResponseModel):
    """``GET /account``: who the caller is here (any level), and which librarian this is."""

    name: str
    level: UserLevel
    librarian: str
    version: str


class PeerCheck(ResponseModel):
    """What asking a peer found: ``ok`` when it answered as itself and took our login."""

    name: str
    url: str
    ok: bool
    librarian: str | None = None
    account: str | None = None
    level: UserLevel | None = None
    version: str | None = None
    error: str | None = None
