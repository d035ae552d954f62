"""User accounts: creation, passwords (argon2id), levels, and password verification.

Passwords are hashed with argon2-cffi's ``PasswordHasher`` using the parameters in
``[security]``; a login with a hash made under older parameters is rehashed on the spot so
raising the cost takes effect as users come back. Verification is deliberately slow (~0.1 s);
the API caches successful verifications (``api.auth``), services do not.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import User
from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.settings import SecuritySettings
from librarian_dagster.states import UserLevel

USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@lru_cache(maxsize=8)
def password_hasher(security: SecuritySettings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=security.argon2_time_cost,
        memory_cost=security.argon2_memory_cost_kib,
        parallelism=security.argon2_parallelism,
    )


@dataclass(frozen=True)
class Principal:
    """Who is calling: what the API needs after authentication (no hash, no ORM state)."""

    name: str
    level: UserLevel


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def _check_name(name: str) -> None:
    if not USER_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"password must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters long"
        )
    if "\x00" in password:
        raise InvalidRequest("password must not contain NUL")


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.name)).all()


def create_user(
    session: Session, hasher: PasswordHasher, name: str, password: str, level: UserLevel
) -> User:
    _check_name(name)
    _check_password(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(name=name, password_hash=hasher.hash(password), level=level)
    session.add(user)
    session.flush()
    return user


def _admin_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(User.level == UserLevel.ADMIN)) or 0


def refuse_self_lockout(actor: str, name: str, what: str, *, force: bool) -> None:
    """An admin demoting or deleting their own account must say so (``force``), else 409.

    One slip (or a fuzzer with admin credentials) must not lock the operator out; the last
    admin is protected separately and always.
    """
    if actor == name and not force:
        raise Conflict(f"refusing to {what} your own account {name!r}; pass force=true to do it")


def delete_user(session: Session, name: str) -> None:
    user = get_user(session, name)
    if user.level == UserLevel.ADMIN and _admin_count(session) <= 1:
        raise Conflict("refusing to delete the last admin account")
    session.delete(user)
    session.flush()


def set_password(session: Session, hasher: PasswordHasher, name: str, password: str) -> User:
    _check_password(password)
    user = get_user(session, name)
    user.password_hash = hasher.hash(password)
    user.password_changed_at = datetime.now(UTC)
    session.flush()
    return user


def set_level(session: Session, name: str, level: UserLevel) -> User:
    user = get_user(session, name)
    if user.level == UserLevel.ADMIN and level != UserLevel.ADMIN and _admin_count(session) <= 1:
        raise Conflict("refusing to demote the last admin account")
    user.level = level
    session.flush()
    return user


# A hash of a random password, verified when the user does not exist so that a missing user
# costs the same time as a wrong password (no user-name oracle through timing).
_DUMMY_PASSWORD = secrets.token_urlsafe(16)


@lru_cache(maxsize=8)
def _dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash(_DUMMY_PASSWORD)


def verify_password(
    session: Session, hasher: PasswordHasher, name: str, password: str
) -> User | None:
    """The user if the password is right (rehashing an outdated hash), else None."""
    user = (
        session.scalar(select(User).where(User.name == name)) if USER_NAME.fullmatch(name) else None
    )
    if user is None:
        with contextlib.suppress(VerificationError):
            hasher.verify(_dummy_hash(hasher), password + "\x00")
        return None
    try:
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
        session.flush()
    return user
