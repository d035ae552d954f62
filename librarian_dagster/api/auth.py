"""HTTP Basic authentication and permission guards for the Litestar app.

Every request but ``/api/v2/ping`` and the OpenAPI schema must carry Basic credentials. An
argon2 verification costs ~0.1 s of CPU, so a successful one is remembered for a short time,
keyed by an HMAC (with a per-process random key) of the user name, the password *and the
stored hash*: a password change or a deleted account invalidates the cache entry by itself,
in this process and in any other that changed the catalogue. Each use extends an entry by
``ttl`` (it lapses ``ttl`` after the last request). The cache remembers only that
the password was right: the level is read from the catalogue on every request, so a
promotion or demotion counts from the next request.

Threads: the catalogue read runs on anyio's default pool; argon2 runs on a limiter of its own
(as many verifications at once as there are CPUs), and uploads' body reads on theirs, so no
flood of one kind can take the threads another needs. Failed logins are throttled per user
name and per client address (``login_throttle``), after the cache is consulted, so a cached
valid request never waits for a guesser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable

import anyio.to_thread
from argon2 import PasswordHasher
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from sqlalchemy import select

from librarian_dagster.api.login_throttle import ADDRESS_PREFIX, LoginThrottle
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import User
from librarian_dagster.services.accounts import Principal, verify_password
from librarian_dagster.services.errors import TooManyRequests
from librarian_dagster.services.peers import calling_peer
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
        self._cache: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self.verify_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))

    def _cache_key(self, name: str, password: str, password_hash: str) -> bytes:
        message = "\x00".join((name, password, password_hash)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def cached(self, name: str, password: str) -> Principal | None:
        """The principal, with its current level, if these credentials were verified lately."""
        if self._ttl <= 0:
            return None
        with self._catalogue.session() as session:
            row = session.execute(
                select(User.password_hash, User.level).where(User.name == name)
            ).first()
        if row is None:
            return None
        key = self._cache_key(name, password, row.password_hash)
        now = time.monotonic()
        with self._lock:
            expires = self._cache.get(key)
            if expires is None or expires <= now:
                return None
            # Sliding: a user who keeps working stays verified, even while someone guessing
            # at their name holds back fresh logins (the login throttle).
            self._cache[key] = now + self._ttl
        return Principal(name=name, level=row.level)

    def verify(self, name: str, password: str) -> Principal | None:
        """The caller's principal, or None for an unknown user or a wrong password (argon2)."""
        with self._catalogue.session() as session:
            user = verify_password(session, self._hasher, name, password)
            if user is None:
                return None
            principal = Principal(name=user.name, level=user.level)
            if self._ttl > 0:
                key = self._cache_key(name, password, user.password_hash)
                with self._lock:
                    if len(self._cache) >= _CACHE_LIMIT:
                        self._cache.clear()
                    self._cache[key] = time.monotonic() + self._ttl
            return principal

    def authenticate(self, name: str, password: str) -> Principal | None:
        """``cached`` or else ``verify``, in the calling thread (for the CLI and tests)."""
        return self.cached(name, password) or self.verify(name, password)


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
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        throttle: LoginThrottle,
        exclude: list[str] | None = None,
    ) -> None:
        # Only OPTIONS goes unauthenticated (said here: Litestar's default has changed before).
        super().__init__(app=app, exclude=exclude, exclude_http_methods=["OPTIONS"])
        self._authenticator = authenticator
        self._throttle = throttle

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        credentials = parse_basic(connection.headers.get("authorization"))
        if credentials is None:
            raise NotAuthorizedException(
                detail="HTTP Basic credentials required", headers={"WWW-Authenticate": REALM}
            )
        name, password = credentials
        principal = await anyio.to_thread.run_sync(self._authenticator.cached, name, password)
        if principal is not None:
            return AuthenticationResult(user=principal, auth=None)
        address = connection.client.host if connection.client else "unknown"
        keys = (f"user:{name}", f"{ADDRESS_PREFIX}{address}")
        wait = self._throttle.begin(keys)
        if wait > 0:
            raise TooManyRequests(
                f"too many failed logins for this user or address; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        try:
            principal = await anyio.to_thread.run_sync(
                self._authenticator.verify,
                name,
                password,
                limiter=self._authenticator.verify_limiter,
            )
        except BaseException:
            self._throttle.abandoned(keys)  # no answer (the catalogue down, a cancelled request)
            raise
        if principal is None:
            self._throttle.failed(keys)
            raise NotAuthorizedException(
                detail="wrong user name or password", headers={"WWW-Authenticate": REALM}
            )
        self._throttle.succeeded(keys)
        return AuthenticationResult(user=principal, auth=None)


Guard = Callable[[ASGIConnection, BaseRouteHandler], None]
AsyncGuard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]


def requires(level: UserLevel) -> Guard:
    """A guard that lets through callers at ``level`` or above (403 otherwise)."""

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # Litestar's own answer (204 + Allow); the middleware does not authenticate it
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


def requires_peer(catalogue: Catalogue, *, admin_too: bool) -> AsyncGuard:
    """A guard for the clone routes: the caller must be a peer of ours (its account is named
    after it), or, where ``admin_too``, an admin; 403 otherwise, before the body is read."""

    async def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return
        principal: Principal = connection.user
        if admin_too and principal.level == UserLevel.ADMIN:
            return

        def is_peer() -> bool:
            with catalogue.session() as session:
                return calling_peer(session, principal) is not None

        if not await anyio.to_thread.run_sync(is_peer):
            raise PermissionDeniedException(
                detail=(
                    f"{principal.name!r} is not a peer of this librarian: peers call with an "
                    "account named after them" + (" (or an admin's)" if admin_too else "")
                )
            )

    return guard
