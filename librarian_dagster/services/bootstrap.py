"""``librarian init`` and the start of ``librarian serve``: make a librarian ready to run.

Idempotent by construction: every step checks what is there and only adds what is missing,
so ``init`` can be re-run after an upgrade (it applies new migrations) or a config change
(it syncs stores), and never replaces a secret key or resets a password. Dagster's home
(``dagster_instance``) is the CLI's to prepare, after this: the core knows no Dagster.

Only ``init`` creates or migrates a catalogue (``prepare``). Everything else — ``serve``,
the admin commands — opens one that must already be there and current (``ready``,
``open_catalogue``): a command run in the wrong directory must say so in one line, not
leave a fresh empty catalogue behind, and a schema upgrade is an operator's deliberate act.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from librarian_dagster.catalogue.database import Catalogue, get_catalogue, sqlite_file
from librarian_dagster.catalogue.migrate import current_revision, head_revision, upgrade
from librarian_dagster.catalogue.models import User
from librarian_dagster.services import accounts
from librarian_dagster.services.errors import CatalogueNotReady
from librarian_dagster.services.stores import open_store, record_drives, sync_stores
from librarian_dagster.settings import SECRET_KEY_ENV, LibrarianSettings
from librarian_dagster.states import StoreKind, UserLevel
from librarian_dagster.storage.posix import narrow_mode
from librarian_dagster.storage.sneaker import (
    DriveError,
    DriveIdentity,
    check_drive,
    provision_drive,
)

ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "LIBRARIAN_ADMIN_PASSWORD"


@dataclass(frozen=True)
class InitResult:
    secret_key_created: bool
    admin_created: bool
    # Only set when init generated the password: the one time it is shown.
    generated_admin_password: str | None
    # What the operator should hear about sneaker stores' drives (``lay_out_stores``).
    store_notes: tuple[str, ...] = ()


def ensure_secret_key(settings: LibrarianSettings) -> bool:
    """Create the 0600 key file unless the key comes from env or the file exists."""
    if os.environ.get(SECRET_KEY_ENV) or settings.secret_key_file.exists():
        return False
    path: Path = settings.secret_key_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return True


def shown_url(url: str) -> str:
    """A database URL fit for a terminal or a log: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _where(settings: LibrarianSettings) -> str:
    """Which configuration was used, for error lines."""
    if settings.config_file is not None:
        return f"config {settings.config_file}"
    return f"no config file: embedded defaults, data dir {settings.data_dir}"


def check_catalogue(settings: LibrarianSettings) -> None:
    """Raise ``CatalogueNotReady`` (one line, with the fix) unless the catalogue is current.

    Creates nothing: a SQLite file that is not there is reported, not made.
    """
    shown = shown_url(settings.catalogue_url)
    database_file = sqlite_file(settings.catalogue_url)
    if database_file is not None and not database_file.is_file():
        raise CatalogueNotReady(
            f"no catalogue at {database_file} ({_where(settings)}); run `librarian init` "
            "to create it, or point --config / LIBRARIAN_CONFIG at the librarian's "
            "librarian.toml"
        )
    try:
        found = current_revision(get_catalogue(settings.catalogue_url).engine)
    except SQLAlchemyError as error:
        reason = str(error.orig if getattr(error, "orig", None) else error).splitlines()[0]
        raise CatalogueNotReady(
            f"cannot open the catalogue {shown} ({_where(settings)}): {reason}"
        ) from None
    wanted = head_revision()
    if found is None:
        raise CatalogueNotReady(
            f"the catalogue {shown} is empty (never initialised; {_where(settings)}); "
            "run `librarian init`"
        )
    if found != wanted:
        raise CatalogueNotReady(
            f"the catalogue {shown} is at schema revision {found}, this librarian needs "
            f"{wanted}; back it up, then run `librarian init` to migrate it"
        )


def open_catalogue(settings: LibrarianSettings) -> Catalogue:
    """The librarian's catalogue, checked to exist and be current (never created here)."""
    check_catalogue(settings)
    return get_catalogue(settings.catalogue_url)


def ready(settings: LibrarianSettings) -> list[str]:
    """``serve``'s start: an existing, current catalogue; store layout and store rows synced.

    The data dir is narrowed to 0700 here too (it may predate that rule). Returns what the
    operator should hear about the sneaker stores' drives (``lay_out_stores``).
    """
    catalogue = open_catalogue(settings)
    narrow_mode(settings.data_dir, 0o700)
    notes, drives = lay_out_stores(settings, provision=False)
    with catalogue.session() as session:
        sync_stores(session, settings)
        notes += record_drives(session, drives)
    return notes


def prepare(settings: LibrarianSettings) -> list[str]:
    """What every process of a librarian needs: the data dir, the schema, the stores.

    The data dir is 0700 whatever the umask: it holds the catalogue (password hashes), the
    secret key and Dagster's storage.
    """
    notes, drives = lay_out_stores(settings, provision=True)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    narrow_mode(settings.data_dir, 0o700)
    catalogue = get_catalogue(settings.catalogue_url)
    upgrade(catalogue.engine)
    with catalogue.session() as session:
        sync_stores(session, settings)
        notes += record_drives(session, drives)
    return notes


def lay_out_stores(
    settings: LibrarianSettings, *, provision: bool
) -> tuple[list[str], dict[str, DriveIdentity]]:
    """Create every store's layout; a sneaker store's only on its own drive.

    Returns notes for the operator and the identity of each sneaker store's drive in place.

    A sneaker store's root is a drive's mount point: with ``provision`` (``init``) an empty
    drive there is given this store's identity; a drive that is not this store's is refused
    (DriveError, nothing written) at ``init``, and at ``serve`` skipped with a note, as is
    a root with no drive mounted: the librarian serves on while a drive is away.
    """
    notes: list[str] = []
    drives: dict[str, DriveIdentity] = {}
    for config in settings.stores:
        store = open_store(config)
        if config.kind == StoreKind.SNEAKER:
            if not store.root.is_dir():
                notes.append(f"store {config.name}: no drive mounted at {store.root}; skipped")
                continue
            if provision:
                identity, written = provision_drive(store.root, settings.name, config.name)
                if written:
                    notes.append(f"store {config.name}: provisioned {identity.describe()}")
            else:
                try:
                    identity = check_drive(store.root, settings.name, config.name)
                except DriveError as error:
                    notes.append(f"{error}; skipped")
                    continue
            drives[config.name] = identity
        store.ensure_layout()
    return notes, drives


def initialise(settings: LibrarianSettings) -> InitResult:
    """``librarian init``: ``prepare`` plus the secret key and the first admin account."""
    key_created = ensure_secret_key(settings)
    notes = tuple(prepare(settings))
    catalogue = get_catalogue(settings.catalogue_url)
    with catalogue.session() as session:
        if session.scalar(select(User.id).where(User.name == ADMIN_USER)) is not None:
            return InitResult(key_created, False, None, notes)
        given = os.environ.get(ADMIN_PASSWORD_ENV)
        password = given or accounts.generate_password()
        accounts.create_user(
            session,
            accounts.password_hasher(settings.security),
            ADMIN_USER,
            password,
            UserLevel.ADMIN,
        )
    return InitResult(key_created, True, None if given else password, notes)
