"""Client connections: which librarians this user talks to, and as whom.

Read from the TOML file named by ``LIBRARIAN_CLIENT_CONFIG``, else
``~/.config/librarian/client.toml``; a missing file simply means "no connections"::

    [connections.site-a]
    url = "https://librarian.site-a.example:8080"
    user = "alice"
    password_env = "LIBRARIAN_SITE_A_PASSWORD"   # the password is read from this variable

Passwords do not belong in the file: ``password_env`` names the environment variable that
holds it. A literal ``password = "..."`` is accepted for throwaway scripts and tests, but it is
discouraged (the file is then a secret; keep it mode 0600). Give one or the other, not both.

``client_settings`` (SPEC §8) is a lazy proxy rather than a value read at import: importing
the client must never fail because someone's config file has a typo, and tests or scripts
that set ``LIBRARIAN_CLIENT_CONFIG`` after import must still be honoured. The file is read
on first attribute access and re-read whenever the configured path changes (or on
``client_settings.reload()``); errors surface then, as ``ClientConfigError``.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from librarian_dagster.client.errors import ClientConfigError

CLIENT_CONFIG_ENV = "LIBRARIAN_CLIENT_CONFIG"
DEFAULT_CLIENT_CONFIG = Path("~/.config/librarian/client.toml")

_toml_file: ContextVar[Path | None] = ContextVar("librarian_client_toml", default=None)


class ConnectionInfo(BaseModel):
    """How to reach one librarian: its URL, the account, and where the password comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(pattern=r"^https?://[^/\s]+", description="API base URL")]
    user: Annotated[str, Field(min_length=1)]
    password_env: Annotated[str | None, Field(min_length=1)] = None
    # Discouraged: a literal password makes the config file a secret. SecretStr keeps it out
    # of reprs and logs.
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _one_password_source(self) -> ConnectionInfo:
        if self.password_env is not None and self.password is not None:
            raise ValueError("give password_env or password, not both")
        return self

    def resolve_password(self) -> str:
        """The password, read now (not at load) so rotating the env var needs no reload."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env is None:
            raise ClientConfigError(
                f"the connection to {self.url} as {self.user!r} has no password_env "
                "(name the environment variable that holds the password)"
            )
        value = os.environ.get(self.password_env)
        if not value:
            raise ClientConfigError(
                f"environment variable {self.password_env} is not set "
                f"(it holds the password of {self.user!r} at {self.url})"
            )
        return value


class ClientSettings(BaseSettings):
    """Every connection of this user, by name (``[connections.<name>]`` tables)."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    connections: dict[str, ConnectionInfo] = Field(default_factory=dict)
    # The file the settings came from (None: there was none).
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
        """Init values, then the TOML file; no env source (connections are tables)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        toml_file = _toml_file.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def connection(self, name: str) -> ConnectionInfo:
        """One connection by name, with an error that lists the known names."""
        try:
            return self.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.connections)) or "none"
            where = self.config_file or client_config_path()
            raise ClientConfigError(
                f"no connection named {name!r} in {where} (known: {known})"
            ) from None


def client_config_path() -> Path:
    """Where the client config is read from: ``$LIBRARIAN_CLIENT_CONFIG`` or the default."""
    return Path(os.environ.get(CLIENT_CONFIG_ENV) or DEFAULT_CLIENT_CONFIG).expanduser()


def _format_error(error: ValidationError, source: Path) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = len(error.errors()) - 1
    return f"{source}: {location}: {message}" + (f" (and {more} more)" if more else "")


def load_client_settings(path: Path | None = None) -> ClientSettings:
    """Read the client config; a missing file is no connections, a broken one an error.

    An explicitly given ``path`` that does not exist is an error (it was asked for).
    """
    if path is not None:
        return _load(path.expanduser(), required=True)
    return _load(client_config_path(), required=False)


def _load(config: Path, *, required: bool) -> ClientSettings:
    if not config.is_file():
        if required:
            raise ClientConfigError(f"{config}: client config file not found")
        return ClientSettings()
    token = _toml_file.set(config)
    try:
        return ClientSettings(config_file=config.resolve())
    except ValidationError as error:
        raise ClientConfigError(_format_error(error, config)) from None
    except (ValueError, OSError) as error:  # TOML syntax errors are ValueErrors
        raise ClientConfigError(f"{config}: {error}") from None
    finally:
        _toml_file.reset(token)


class LazyClientSettings:
    """Looks like ``ClientSettings``; loads on first use and when the config path changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Path, ClientSettings] | None = None

    def load(self) -> ClientSettings:
        """The current settings (reading the file if not read yet or the path changed)."""
        path = client_config_path()
        with self._lock:
            if self._loaded is None or self._loaded[0] != path:
                self._loaded = (path, _load(path, required=False))
            return self._loaded[1]

    def reload(self) -> ClientSettings:
        """Forget what was read, e.g. after editing the file."""
        with self._lock:
            self._loaded = None
        return self.load()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        return f"<lazy client settings from {client_config_path()}>"


client_settings: ClientSettings = LazyClientSettings()  # type: ignore[assignment]
"""The user's client settings, read lazily (see the module docstring)."""
