"""Stores: from the config file into the catalogue, and from settings to ``LocalStore`` objects.

Stores are declared in the TOML file. ``sync_stores`` makes the catalogue agree (adds new
ones, updates kind/root/ingestable, marks vanished ones undeclared so their instances stay on
record) and is run by ``librarian init`` and at ``librarian serve``. ``enabled`` is runtime
state an operator toggles (``librarian store enable|disable``), so a sync only sets it for
new stores.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Store
from librarian_dagster.services.errors import NotFound
from librarian_dagster.settings import LibrarianSettings, StoreSettings
from librarian_dagster.states import StoreKind
from librarian_dagster.storage.local_store import LocalStore


def open_store(store: StoreSettings) -> LocalStore:
    return LocalStore(store.name, store.root, reserve_bytes=store.reserve_bytes, kind=store.kind)


def open_stores(settings: LibrarianSettings) -> dict[str, LocalStore]:
    return {store.name: open_store(store) for store in settings.stores}


def sync_stores(session: Session, settings: LibrarianSettings) -> list[Store]:
    """Upsert the declared stores; returns the catalogue rows of the declared ones."""
    existing = {store.name: store for store in session.scalars(select(Store))}
    declared: list[Store] = []
    for config in settings.stores:
        row = existing.pop(config.name, None)
        if row is None:
            row = Store(name=config.name, enabled=config.enabled)
            session.add(row)
        row.kind = StoreKind(config.kind)
        row.root = str(config.root)
        row.ingestable = config.ingestable
        row.declared = True
        declared.append(row)
    for row in existing.values():
        row.declared = False
    session.flush()
    return declared


def list_stores(session: Session) -> Sequence[Store]:
    return session.scalars(select(Store).order_by(Store.name)).all()


def set_store_enabled(session: Session, name: str, enabled: bool) -> Store:
    row = session.scalar(select(Store).where(Store.name == name))
    if row is None:
        raise NotFound(f"no store named {name!r}")
    row.enabled = enabled
    session.flush()
    return row
