"""The names of the peers of the librarian this process serves, read from its catalogue.

For the Dagster code location, which builds one asset per peer when it loads: settings as
``librarian serve`` passes them (``LIBRARIAN_CONFIG``, ``LIBRARIAN_*``), the catalogue
opened without being created or migrated.
"""

from __future__ import annotations

from sqlalchemy import select

from librarian_dagster.catalogue.models import Librarian
from librarian_dagster.services.bootstrap import open_catalogue
from librarian_dagster.settings import load_settings


def peer_names() -> list[str]:
    catalogue = open_catalogue(load_settings())
    with catalogue.session() as session:
        return list(session.scalars(select(Librarian.name).order_by(Librarian.name)))
