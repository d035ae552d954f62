"""Accounts: creation rules, argon2 hashing with rehash-on-login, admin safety."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services import accounts
from librarian_dagster.services.errors import Conflict, InvalidRequest, NotFound
from librarian_dagster.settings import SecuritySettings
from librarian_dagster.states import UserLevel

CHEAP = accounts.password_hasher(
    SecuritySettings(argon2_time_cost=1, argon2_memory_cost_kib=1024, argon2_parallelism=1)
)


def test_create_and_verify(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        user = accounts.create_user(session, CHEAP, "alice", "correct horse", UserLevel.READ_APPEND)
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
    with catalogue.session() as session:
        assert accounts.verify_password(session, CHEAP, "alice", "correct horse") is not None
        assert accounts.verify_password(session, CHEAP, "alice", "wrong horse!") is None
        assert accounts.verify_password(session, CHEAP, "nobody", "correct horse") is None
        assert accounts.verify_password(session, CHEAP, "bad name!", "correct horse") is None


@pytest.mark.parametrize(
    ("name", "password", "error"),
    [
        ("bad name", "longenough", InvalidRequest),
        ("", "longenough", InvalidRequest),
        ("x" * 65, "longenough", InvalidRequest),
        ("ok", "short", InvalidRequest),
        ("ok", "nul\x00inside", InvalidRequest),
    ],
)
def test_invalid_accounts_are_refused(
    catalogue: Catalogue, name: str, password: str, error: type[Exception]
) -> None:
    with pytest.raises(error), catalogue.session() as session:
        accounts.create_user(session, CHEAP, name, password, UserLevel.READ_ONLY)
    with catalogue.session() as session:
        assert list(accounts.list_users(session)) == []


def test_duplicate_user_conflicts(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        accounts.create_user(session, CHEAP, "bob", "password1", UserLevel.READ_ONLY)
    with pytest.raises(Conflict), catalogue.session() as session:
        accounts.create_user(session, CHEAP, "bob", "password2", UserLevel.ADMIN)


def test_login_rehashes_when_parameters_change(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        old_hash = accounts.create_user(
            session, CHEAP, "carol", "password1", UserLevel.ADMIN
        ).password_hash
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    with catalogue.session() as session:
        user = accounts.verify_password(session, stronger, "carol", "password1")
        assert user is not None
    with catalogue.session() as session:
        new_hash = accounts.get_user(session, "carol").password_hash
    assert new_hash != old_hash
    assert not stronger.check_needs_rehash(new_hash)
    assert stronger.verify(new_hash, "password1")


def test_production_defaults_are_argon2id_64mib() -> None:
    hasher = accounts.password_hasher(SecuritySettings())
    encoded = hasher.hash("password1")
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_last_admin_cannot_be_deleted_or_demoted(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        accounts.create_user(session, CHEAP, "root1", "password1", UserLevel.ADMIN)
    with pytest.raises(Conflict), catalogue.session() as session:
        accounts.delete_user(session, "root1")
    with pytest.raises(Conflict), catalogue.session() as session:
        accounts.set_level(session, "root1", UserLevel.READ_ONLY)
    with catalogue.session() as session:
        accounts.create_user(session, CHEAP, "root2", "password1", UserLevel.ADMIN)
        accounts.delete_user(session, "root1")
        assert [u.name for u in accounts.list_users(session)] == ["root2"]


def test_password_change_and_missing_user(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        accounts.create_user(session, CHEAP, "dave", "password1", UserLevel.READ_ONLY)
        accounts.set_password(session, CHEAP, "dave", "password2")
    with catalogue.session() as session:
        assert accounts.verify_password(session, CHEAP, "dave", "password1") is None
        assert accounts.verify_password(session, CHEAP, "dave", "password2") is not None
    with pytest.raises(NotFound), catalogue.session() as session:
        accounts.set_password(session, CHEAP, "erin", "password1")
