"""The ``catalogue`` and ``stores`` resources, and the settings every resource reads.

Settings are read lazily (``LIBRARIAN_CONFIG`` and ``LIBRARIAN_*`` as inherited from
``librarian serve``, or the ``config_file`` a test points at), never at import time, so the
code location loads anywhere.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings, load_settings
from librarian_dagster.storage.local_store import LocalStore


class SettingsResource(dg.ConfigurableResource):
    """Base: knows which config file to read (empty: the environment decides)."""

    config_file: str = ""
    _settings: LibrarianSettings | None = PrivateAttr(default=None)

    @property
    def settings(self) -> LibrarianSettings:
        if self._settings is None:
            self._settings = load_settings(Path(self.config_file) if self.config_file else None)
        return self._settings


class CatalogueResource(SettingsResource):
    """The catalogue: ``with catalogue.session() as session`` is the unit of work."""

    @property
    def catalogue(self) -> Catalogue:
        return get_catalogue(self.settings.catalogue_url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.catalogue.session() as session:
            yield session


class StoresResource(SettingsResource):
    """This librarian's stores, by name."""

    def all(self) -> dict[str, LocalStore]:
        return open_stores(self.settings)

    def get(self, name: str) -> LocalStore:
        return self.all()[name]
