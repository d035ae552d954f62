"""HTTP Basic authentication and permission guards for the Litestar app.

Every request but ``/api/v2/ping`` and the OpenAPI schema must carry Basic credentials. An
argon2 verification costs ~0.1 s of CPU, so a successful one is remembered for a short time,
keyed by an HMAC (with a per-process random key) of the user name, the password *and the
stored hash*: a password change or a deleted account invalidates the cache entry by itself,
in this process and in any other that changed the catalogue. The verification itself runs in
a worker thread so it never blocks the event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

import anyio.to_thread
from argon2 import PasswordHasher
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from sqlalchemy import select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import User
from librarian_dagster.services.accounts import Principal, verify_password
from librarian_dagster.states import UserLevel

REALM = 'Basic realm="librarian", charset="UTF-8"'
UNAUTHENTICATED_PATHS = ["^/api/v2/ping$", "^/schema"]
_CACHE_LIMIT = 4096


class Authenticator:
    """Verifies Basic credentials against the catalogue, with a short positive cache."""

    def __init__(self, catalogue: Catalogue, hasher: PasswordHasher, ttl_seconds: float) -> None:
        self._catalogue = catalogue
        self._hasher = hasher
        self._ttl = ttl_seconds
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def _cache_key(self, name: str, password: str, password_hash: str) -> bytes:
        message = "\x00".join((name, password, password_hash)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The caller's principal, or None for an unknown user or a wrong password."""
        with self._catalogue.session() as session:
            row = session.execute(
                select(User.password_hash, User.level).where(User.name == name)
            ).first()
            if row is not None and self._ttl > 0:
                key = self._cache_key(name, password, row.password_hash)
                with self._lock:
                    cached = self._cache.get(key)
                if cached is not None and cached[0] > time.monotonic():
                    return cached[1]
            user = verify_password(session, self._hasher, name, password)
            if user is None:
                return None
            principal = Principal(name=user.name, level=user.level)
            if self._ttl > 0:
                key = self._cache_key(name, password, user.password_hash)
                with self._lock:
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[key] = (time.monotonic() + self._ttl, principal)
            return principal


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None if malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class BasicAuthMiddleware(AbstractAuthenticationMiddleware):
    def __init__(
        self, app: ASGIApp, authenticator: Authenticator, exclude: list[str] | None = None
    ) -> None:
        super().__init__(app=app, exclude=exclude)
        self._authenticator = authenticator

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        credentials = parse_basic(connection.headers.get("authorization"))
        if credentials is None:
            raise NotAuthorizedException(
                detail="HTTP Basic credentials required", headers={"WWW-Authenticate": REALM}
            )
        principal = await anyio.to_thread.run_sync(self._authenticator.authenticate, *credentials)
        if principal is None:
            raise NotAuthorizedException(
                detail="wrong user name or password", headers={"WWW-Authenticate": REALM}
            )
        return AuthenticationResult(user=principal, auth=None)


Guard = Callable[[ASGIConnection, BaseRouteHandler], None]


def requires(level: UserLevel) -> Guard:
    """A guard that lets through callers at ``level`` or above (403 otherwise)."""

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if not principal.level.allows(level):
            raise PermissionDeniedException(
                detail=(
                    f"this needs the {level.value} level; "
                    f"{principal.name!r} has {principal.level.value}"
                )
            )

    guard.required_level = level  # type: ignore[attr-defined]
    return guard
