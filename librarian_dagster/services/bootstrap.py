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
from collections.abc import Mapping
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
from librarian_dagster.services.stores import (
    RecordedDrive,
    open_store,
    record_drives,
    recorded_drives,
    sync_stores,
)
from librarian_dagster.settings import SECRET_KEY_ENV, LibrarianSettings, StoreSettings
from librarian_dagster.states import StoreKind, UserLevel
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.posix import narrow_mode
from librarian_dagster.storage.sneaker import (
    DriveAway,
    DriveError,
    DriveIdentity,
    check_drive,
    provision_drive,
    read_identity,
    require_drive_root,
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
    return _stores(settings, catalogue, provision=False)


def prepare(settings: LibrarianSettings) -> list[str]:
    """What every process of a librarian needs: the data dir, the schema, the stores.

    The data dir is 0700 whatever the umask: it holds the catalogue (password hashes), the
    secret key and Dagster's storage. The catalogue is migrated before any drive is
    looked at: it says which drive holds each sneaker store's copies.
    """
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    narrow_mode(settings.data_dir, 0o700)
    catalogue = get_catalogue(settings.catalogue_url)
    upgrade(catalogue.engine)
    return _stores(settings, catalogue, provision=True)


def _stores(settings: LibrarianSettings, catalogue: Catalogue, *, provision: bool) -> list[str]:
    with catalogue.session() as session:
        recorded = recorded_drives(session)
    notes, drives = lay_out_stores(settings, recorded, provision=provision)
    with catalogue.session() as session:
        sync_stores(session, settings)
        record_drives(session, drives)
    return notes


def lay_out_stores(
    settings: LibrarianSettings, recorded: Mapping[str, RecordedDrive], *, provision: bool
) -> tuple[list[str], dict[str, DriveIdentity]]:
    """Create every store's layout; a sneaker store's only on its own drive.

    Returns notes for the operator and the identity of each sneaker store's drive in place.
    A sneaker store's root is a drive's mount point. With ``provision`` (``init``) an empty
    drive there is given the store's identity, and a drive that is not the store's (another
    store's, garbled, data without an identity, or not the drive its copies are on) is
    refused: DriveError, nothing written. At ``serve`` such a drive is skipped with a note.
    A root with no drive mounted is skipped with a note by both: drives travel, and the
    librarian serves on while one is away.
    """
    notes: list[str] = []
    drives: dict[str, DriveIdentity] = {}
    for config in settings.stores:
        store = open_store(config)
        if config.kind != StoreKind.SNEAKER:
            store.ensure_layout()
            continue
        try:
            identity, note = _drive(config, settings.name, recorded, provision=provision)
            store.ensure_layout()
        except DriveAway as error:
            notes.append(f"{error}; skipped")
            continue
        except (OSError, StoreError) as error:
            if provision:
                raise
            notes.append(f"{error}; skipped")
            continue
        drives[config.name] = identity
        notes += [note] if note else []
    return notes, drives


def _drive(
    config: StoreSettings,
    librarian: str,
    recorded: Mapping[str, RecordedDrive],
    *,
    provision: bool,
) -> tuple[DriveIdentity, str | None]:
    """The drive at a sneaker store's root if it is the one to use (and a note), else why not."""
    root, name, mount = config.root, config.name, config.require_mount
    known = recorded.get(name, RecordedDrive())
    note = None
    if provision:
        require_drive_root(root, name, require_mount=mount)
        if known.holds_copies and read_identity(root) is None:
            raise DriveError(
                f"store {name!r}: its copies are on drive {known.drive_uuid}, not on the "
                f"empty drive at {root}; nothing was written to it"
            )
        identity, written = provision_drive(root, librarian, name, require_mount=mount)
        note = f"store {name!r}: provisioned {identity.describe()}" if written else None
    else:
        identity = check_drive(root, librarian, name, require_mount=mount)
    if known.holds_copies and known.drive_uuid not in (None, identity.drive_uuid):
        raise DriveError(
            f"store {name!r}: {root} holds drive {identity.drive_uuid}, but the store's "
            f"copies are on drive {known.drive_uuid}; nothing was written to it"
        )
    return identity, note


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
