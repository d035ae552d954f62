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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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
from librarian_dagster.storage.checksums import ALGORITHMS, DEFAULT_ALGORITHM

CONFIG_ENV = "LIBRARIAN_CONFIG"
DEFAULT_CONFIG = "librarian.toml"
SECRET_KEY_ENV = "LIBRARIAN_SECRET_KEY"
SECRET_KEY_FILE = "secret.key"

_toml_file: ContextVar[Path | None] = ContextVar("librarian_toml_file", default=None)


class SettingsError(ValueError):
    """Configuration is unusable; the message is one line that names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    public_url: str = ""
    # Bodies of JSON routes; streamed uploads set their own limit per route.
    max_json_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    # How long a verified password stays trusted in the API process (argon2 is slow on purpose).
    auth_cache_seconds: Annotated[float, Field(ge=0)] = 60.0
    # Wrong passwords per user name (and 4 times as many per client address) before each
    # further attempt waits (1 s, doubling, at most 300 s; answered 429 with Retry-After).
    login_failures_before_delay: Annotated[int, Field(ge=1)] = 5
    # An upload body that sends nothing for this long is cut off (408) and its thread freed.
    body_idle_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # ... and so is one slower than this on average, once twice that timeout has passed.
    min_body_bytes_per_second: Annotated[float, Field(ge=0)] = 1024.0
    # Upload bodies one user may stream at once (429 beyond), and all users together.
    max_uploads_per_user: Annotated[int, Field(ge=1)] = 8
    max_concurrent_uploads: Annotated[int, Field(ge=1)] = 64

    @model_validator(mode="after")
    def _default_public_url(self) -> ApiSettings:
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")
        return self


class DagsterSettings(_Section):
    webserver_host: str = "127.0.0.1"
    webserver_port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # PostgreSQL for Dagster's own storage (runs, events, schedules) via dagster-postgres;
    # empty means SQLite under DAGSTER_HOME.
    postgres_url: str = ""
    max_concurrent_runs: Annotated[int, Field(ge=1)] = 4
    # Where queued runs (not the API's commit-time runs) execute: "default" a process here,
    # "docker" a container on the local engine, "k8s" a Kubernetes Job. The last two need
    # `postgres_url`, an image with this librarian, and the stores at the same paths
    # wherever runs start (docs/deployment.md, "Beyond one machine").
    run_launcher: Literal["default", "docker", "k8s"] = "default"
    run_launcher_image: str = ""
    # docker: the network the run containers join (empty: Docker's default).
    run_launcher_network: str = ""
    # k8s: the Jobs' namespace, and the kubeconfig that reaches the cluster (empty: the
    # in-cluster service account, for a daemon that runs inside the cluster itself).
    run_launcher_namespace: str = "default"
    run_launcher_kubeconfig: str = ""
    # Environment variables each run takes from the daemon's environment, besides
    # LIBRARIAN_CONFIG and the Dagster storage URL (e.g. LIBRARIAN_DATABASE_URL).
    run_launcher_env: list[str] = []
    # Further keys of the launcher's own config, merged over the generated ones (docker:
    # `container_kwargs`, `registry`; k8s: `volumes`, `volume_mounts`, `env_secrets`, ...).
    run_launcher_config: dict[str, Any] = {}

    @model_validator(mode="after")
    def _launcher_needs_image(self) -> DagsterSettings:
        if self.run_launcher != "default" and not self.run_launcher_image:
            raise ValueError(f"run_launcher {self.run_launcher!r} needs run_launcher_image")
        if self.run_launcher != "default" and not self.postgres_url:
            raise ValueError(
                f"run_launcher {self.run_launcher!r} needs postgres_url: runs on other hosts "
                "cannot reach SQLite under DAGSTER_HOME"
            )
        return self


class RollingSettings(_Section):
    keep_days: Annotated[int, Field(ge=0)]
    min_copies_elsewhere: Annotated[int, Field(ge=1)] = 1


class StoreSettings(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["local", "sneaker"] = "local"
    root: Path
    ingestable: bool = True
    enabled: bool = True
    # A drop folder on the store's filesystem: books appear at ``inbox_depth`` path segments
    # below it and count as finished when ``<book>.done`` appears beside them (the marker may
    # hold the producer's checksum) or, if ``inbox_quiet_seconds`` is set, when nothing in
    # them changed for that long.
    inbox: Path | None = None
    inbox_depth: Annotated[int, Field(ge=1, le=16)] = 1
    inbox_quiet_seconds: Annotated[float, Field(gt=0)] | None = None
    rolling: RollingSettings | None = None
    # Space kept free on the store's filesystem; staging refuses uploads that would eat into it.
    reserve_bytes: Annotated[int, Field(ge=0)] = 1024**3


class TransferSettings(_Section):
    batch_min: Annotated[int, Field(ge=1)] = 128
    batch_max: Annotated[int, Field(ge=1)] = 1024
    batch_max_bytes: Annotated[int, Field(ge=1)] = 50 * 1024**4
    max_active_transfers: Annotated[int, Field(ge=1, le=100)] = 90

    @model_validator(mode="after")
    def _ordered(self) -> TransferSettings:
        if self.batch_min > self.batch_max:
            raise ValueError("batch_min must not exceed batch_max")
        return self


class IngestSettings(_Section):
    """How staged books become ingest runs."""

    # One run verifies many books (a run costs a process); caps keep one huge book from
    # waiting behind many small ones.
    max_books_per_run: Annotated[int, Field(ge=1)] = 200
    max_bytes_per_run: Annotated[int, Field(ge=1)] = 64 * 1024**3
    # Staged transfers the sensor looks at per tick (the rest wait for the next tick).
    max_transfers_per_tick: Annotated[int, Field(ge=1)] = 2000
    # A requested run that has not claimed its books after this long is requested again.
    relaunch_after_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Launch the ingest run as soon as an upload is committed (the sensor stays the backstop).
    launch_on_commit: bool = True
    # Where those runs execute: "api" runs them one at a time inside the API process (no
    # queue wait, no worker process start: ~0.4 s of Dagster overhead instead of ~2 s);
    # "queue" submits them to Dagster's run queue like the sensor's runs.
    commit_runs: Literal["api", "queue"] = "api"
    # Largest single upload accepted (413 beyond); books are 10-20 GB, so 1 TiB is generous.
    max_upload_bytes: Annotated[int, Field(ge=1)] = 1024**4
    # An upload staged but sent no bytes for this long is failed and its staging removed;
    # until then its declared size stays reserved.
    stage_expiry_hours: Annotated[float, Field(gt=0)] = 24.0
    # What one user's uncommitted uploads may reserve at once (507 beyond): a share of the
    # ingestable stores' free space, and an absolute cap.
    max_reserved_fraction_per_user: Annotated[float, Field(gt=0, le=1)] = 0.5
    max_reserved_bytes_per_user: Annotated[int, Field(ge=1)] = 16 * 1024**4
    # Entries (files and directories) one directory book may hold, and the declared bytes
    # each entry beyond the first 1,000 needs: a "0-byte" tar of 20,000 empty directories
    # is refused instead of writing their metadata.
    max_entries_per_book: Annotated[int, Field(ge=1)] = 1_000_000
    min_bytes_per_entry: Annotated[int, Field(ge=0)] = 512


class GlobusSettings(_Section):
    client_id: str
    client_secret_env: str = "GLOBUS_CLIENT_SECRET"
    collection_id: str
    path_prefix: str = "/"


class ChecksumSettings(_Section):
    algorithm: str = DEFAULT_ALGORITHM

    @field_validator("algorithm")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; use one of {', '.join(ALGORITHMS)}")
        return value


class NotifySettings(_Section):
    slack_token_env: str = "SLACK_BOT_TOKEN"
    slack_channel: str = "#librarian-alerts"


class SecuritySettings(_Section):
    """Argon2id parameters; changing them rehashes each password at its owner's next login."""

    argon2_time_cost: Annotated[int, Field(ge=1)] = 3
    argon2_memory_cost_kib: Annotated[int, Field(ge=8)] = 64 * 1024
    argon2_parallelism: Annotated[int, Field(ge=1)] = 4


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

    # -- derived locations -------------------------------------------------------------

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
