"""LibrarianSettings: one TOML file plus ``LIBRARIAN_*`` environment overrides.

The file comes from ``LIBRARIAN_CONFIG`` (default ``./librarian.toml``); a missing file means
"embedded defaults" (SQLite and one local store under ``.librarian``), which is what the
README's first command runs on. Every key can be overridden by ``LIBRARIAN_<KEY>`` with ``__``
for nesting (``LIBRARIAN_API__PORT=8081``). Relative paths are resolved against the directory
of the config file (or the working directory when there is none), once, here, so no other
module has to guess what a relative path meant.

Secrets are never read from the TOML file: the secret key comes from ``LIBRARIAN_SECRET_KEY``
or the key file that ``librarian init`` writes with mode 0600; Globus and Slack secrets are
named by the environment variable that holds them.

Settings are resolved in functions (``load_settings``), never at import time, so the Dagster
code location and the tests can load with whatever environment they are given.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from librarian_dagster.settings_errors import (
    ENV_PREFIX,
    NO_FILE,
    format_validation_error,
    format_value_error,
)
from librarian_dagster.settings_sections import (
    ApiSettings,
    ChecksumSettings,
    DagsterSettings,
    GlobusSettings,
    IngestSettings,
    IntegritySettings,
    NotifySettings,
    RollingSettings,
    SecuritySettings,
    StoreSettings,
    TransferSettings,
)

CONFIG_ENV = "LIBRARIAN_CONFIG"
DEFAULT_CONFIG = "librarian.toml"
SECRET_KEY_ENV = "LIBRARIAN_SECRET_KEY"
SECRET_KEY_FILE = "secret.key"

_toml_file: ContextVar[Path | None] = ContextVar("librarian_toml_file", default=None)


__all__ = [
    "CONFIG_ENV",
    "SECRET_KEY_ENV",
    "ApiSettings",
    "ChecksumSettings",
    "DagsterSettings",
    "GlobusSettings",
    "IngestSettings",
    "IntegritySettings",
    "LibrarianSettings",
    "NotifySettings",
    "RollingSettings",
    "SecuritySettings",
    "SettingsError",
    "StoreSettings",
    "TransferSettings",
    "load_settings",
]


class SettingsError(ValueError):
    """Configuration is unusable; the message is one line that names the key."""


def _default_stores() -> list[StoreSettings]:
    return [StoreSettings(name="main", root=Path(".librarian/stores/main"))]


class LibrarianSettings(BaseSettings):
    """The whole configuration of one librarian (SPEC §3)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "librarian"
    )
    data_dir: Path = Path(".librarian")
    database_url: str = ""
    api: ApiSettings = ApiSettings()
    dagster: DagsterSettings = DagsterSettings()
    stores: list[StoreSettings] = Field(default_factory=_default_stores)
    transfer: TransferSettings = TransferSettings()
    ingest: IngestSettings = IngestSettings()
    globus: GlobusSettings | None = None
    checksum: ChecksumSettings = ChecksumSettings()
    integrity: IntegritySettings = IntegritySettings()
    notify: NotifySettings | None = None
    security: SecuritySettings = SecuritySettings()
    # Where the file came from (None: embedded defaults); relative paths were resolved from here.
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _toml_file.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_stores(self) -> LibrarianSettings:
        seen: set[str] = set()
        for store in self.stores:
            if store.name in seen:
                raise ValueError(f"duplicate store name {store.name!r}")
            seen.add(store.name)
        return self

    # -- derived values ----------------------------------------------------------------

    @property
    def default_mover(self) -> str:
        """The mover of a peer added without naming one."""
        if self.transfer.default_mover is not None:
            return self.transfer.default_mover
        return "globus" if self.globus is not None else "local"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / SECRET_KEY_FILE

    @property
    def catalogue_url(self) -> str:
        """The catalogue database URL; SQLite under ``data_dir`` unless configured."""
        return self.database_url or f"sqlite:///{self.data_dir / 'catalogue.sqlite'}"

    def store(self, name: str) -> StoreSettings:
        for store in self.stores:
            if store.name == name:
                return store
        raise KeyError(name)

    def secret_key(self) -> bytes | None:
        """The secret that encrypts peer credentials: env first, then the 0600 key file."""
        from_env = os.environ.get(SECRET_KEY_ENV)
        if from_env:
            return from_env.encode()
        try:
            return self.secret_key_file.read_bytes().strip()
        except FileNotFoundError:
            return None


def _resolve_paths(settings: LibrarianSettings, base: Path) -> LibrarianSettings:
    """Anchor every relative path (data dir, store roots, inboxes, SQLite file) at ``base``."""

    def anchor(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else (base / path)

    stores = [
        store.model_copy(
            update={
                "root": anchor(store.root),
                "inbox": anchor(store.inbox) if store.inbox is not None else None,
            }
        )
        for store in settings.stores
    ]
    database_url = settings.database_url
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and not database_url.startswith(prefix + "/"):
        database_url = prefix + str(anchor(Path(database_url[len(prefix) :])))
    return settings.model_copy(
        update={
            "data_dir": anchor(settings.data_dir),
            "stores": stores,
            "database_url": database_url,
        }
    )


def config_path_from_env() -> Path:
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_settings(
    config_file: Path | None = None, *, base_dir: Path | None = None, **overrides: Any
) -> LibrarianSettings:
    """Read the config file (if any) and the environment, validate, resolve paths.

    Without a file, relative paths are anchored at ``base_dir`` (default: the working
    directory). Raises ``SettingsError`` with one line naming the offending key, and the
    environment variable when one set it.
    """
    path = config_file if config_file is not None else config_path_from_env()
    exists = path.is_file()
    if config_file is not None and not exists:
        raise SettingsError(f"{path}: config file not found")
    if not exists and CONFIG_ENV in os.environ:
        raise SettingsError(f"{path}: config file not found (from {CONFIG_ENV})")
    token = _toml_file.set(path if exists else None)
    source = str(path) if exists else NO_FILE
    try:
        settings = LibrarianSettings(**overrides)
    except ValidationError as error:
        raise SettingsError(format_validation_error(error, source)) from None
    except ValueError as error:  # TOML syntax errors surface as ValueError subclasses
        raise SettingsError(format_value_error(error, source)) from None
    finally:
        _toml_file.reset(token)
    base = path.resolve().parent if exists else (base_dir or Path.cwd())
    settings = settings.model_copy(update={"config_file": path.resolve() if exists else None})
    return _resolve_paths(settings, base)
