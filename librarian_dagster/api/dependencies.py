"""What route handlers are given: typed dependencies, provided once per app.

Handlers declare what they use (``catalogue: CatalogueDep``) instead of reaching into the
app's state by name, so a typo is an error at start-up and a handler's signature says what
it touches. Values are the app's own objects, passed as they are (not validated per
request).
"""

from __future__ import annotations

from typing import Any

from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from librarian_dagster.api.upload_slots import UploadSlots
from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.services.ingest_launcher import IngestLauncher
from librarian_dagster.services.peers import PeerLinks
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.local_store import LocalStore

SettingsDep = NamedDependency[SkipValidation[LibrarianSettings]]
CatalogueDep = NamedDependency[SkipValidation[Catalogue]]
StoresDep = NamedDependency[SkipValidation[dict[str, LocalStore]]]
LauncherDep = NamedDependency[SkipValidation[IngestLauncher | None]]
UploadSlotsDep = NamedDependency[SkipValidation[UploadSlots]]
PeerLinksDep = NamedDependency[SkipValidation[PeerLinks]]


def _constant(value: Any) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def app_dependencies(
    settings: LibrarianSettings,
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    launcher: IngestLauncher | None,
    upload_slots: UploadSlots,
    peer_links: PeerLinks,
) -> dict[str, Provide]:
    """The dependencies of every route: settings, catalogue, stores, the ingest launcher,
    and how to call peers."""
    return {
        "peer_links": _constant(peer_links),
        "settings": _constant(settings),
        "catalogue": _constant(catalogue),
        "stores": _constant(stores),
        "launcher": _constant(launcher),
        "upload_slots": _constant(upload_slots),
    }


__all__ = [
    "CatalogueDep",
    "LauncherDep",
    "PeerLinksDep",
    "SettingsDep",
    "StoresDep",
    "UploadSlotsDep",
    "app_dependencies",
]
