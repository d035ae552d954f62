"""Dagster resources: the same keys in every environment, chosen in one place.

``librarian_resources`` is what the code location, the API's in-process runs and the tests
all bind: ``catalogue``, ``stores``, ``mover``, ``peers`` and ``notifier``, each resolved when
a run starts (never at import), each reading the librarian's settings from ``config_file``
(empty: the environment decides, as under ``librarian serve``). Environments differ in
configuration, never in keys: a peer's mover is ``local`` in tests and ``globus`` in
production, Slack is used when ``[notify]`` says so.
"""

from __future__ import annotations

import dagster as dg

from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.resources.movers import MoverResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.resources.peers import PeersResource


def librarian_resources(config_file: str = "") -> dict[str, dg.ConfigurableResource]:
    """Every resource of a librarian, under its fixed key, reading ``config_file``."""
    return {
        "catalogue": CatalogueResource(config_file=config_file),
        "stores": StoresResource(config_file=config_file),
        "mover": MoverResource(config_file=config_file),
        "peers": PeersResource(config_file=config_file),
        "notifier": NotifierResource(config_file=config_file),
    }


__all__ = [
    "CatalogueResource",
    "MoverResource",
    "NotifierResource",
    "PeersResource",
    "StoresResource",
    "librarian_resources",
]
