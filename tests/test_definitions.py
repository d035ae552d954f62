"""The Dagster code location loads, and the repo's instance files match what serve writes."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import yaml

from librarian_dagster.dagster_instance import (
    instance_config,
    prepare_dagster_home,
    workspace_config,
)
from librarian_dagster.definitions import build_definitions, defs
from librarian_dagster.settings import LibrarianSettings

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_resources_resolve(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    settings = make_settings()
    loaded = build_definitions()
    assert isinstance(loaded, dg.Definitions)
    repository = loaded.get_repository_def()
    repository.load_all_definitions()
    assert {"catalogue", "stores"} <= set(repository.get_top_level_resources())
    from librarian_dagster.resources.librarian import CatalogueResource, StoresResource

    catalogue = CatalogueResource(config_file=str(settings.config_file))
    stores = StoresResource(config_file=str(settings.config_file))
    assert catalogue.settings.name == "test-site"
    assert set(stores.all()) == {"main"}


def test_repo_instance_files_match_generated(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    settings = make_settings()
    assert yaml.safe_load((REPO / "dagster.yaml").read_text()) == instance_config(settings)
    assert yaml.safe_load((REPO / "workspace.yaml").read_text()) == workspace_config()


def test_postgres_storage_never_writes_the_url(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    url = "postgresql://librarian:hunter2@db:5432/dagster"
    settings = make_settings(dagster={"postgres_url": url})
    home = prepare_dagster_home(settings)
    text = (home / "dagster.yaml").read_text()
    assert "hunter2" not in text
    assert yaml.safe_load(text)["storage"] == {
        "postgres": {"postgres_url": {"env": "LIBRARIAN_DAGSTER_PG_URL"}}
    }


def test_the_code_location_has_an_asset_per_peer_from_the_catalogue(
    make_settings: Callable[..., LibrarianSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``defs`` is loaded lazily and reads the peers from the catalogue of the librarian the
    environment names; without a readable catalogue it loads anyway, without peer assets."""
    from librarian_dagster.catalogue.database import get_catalogue
    from librarian_dagster.catalogue.migrate import upgrade
    from librarian_dagster.catalogue.models import Librarian

    settings = make_settings()
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(settings.config_file))
    without = defs()
    assert not [key for key in without.resolve_all_asset_keys() if key.path[0] == "peers"]
    catalogue = get_catalogue(settings.catalogue_url)
    upgrade(catalogue.engine)
    with catalogue.session() as session:
        for name in ("site-b", "site.c", "site_b"):  # site-b and site_b: two ops, not one
            session.add(
                Librarian(name=name, url="http://x", remote_user="u", encrypted_password=b"")
            )
    loaded = defs()
    keys = {key for key in loaded.resolve_all_asset_keys() if key.path[0] == "peers"}
    assert keys == {dg.AssetKey(["peers", name]) for name in ("site-b", "site.c", "site_b")}
    loaded.get_repository_def().load_all_definitions()
    spec = loaded.resolve_assets_def(dg.AssetKey(["peers", "site-b"]))
    assert spec.partitions_def == loaded.resolve_assets_def(dg.AssetKey("book")).partitions_def


def test_loading_the_code_location_freezes_what_it_made(
    make_settings: Callable[..., LibrarianSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code server's imports stay for months: full collections must not walk them at
    every sensor tick (``definitions`` says why), so loading moves them out of the collector."""
    monkeypatch.setenv("LIBRARIAN_CONFIG", str(make_settings().config_file))
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    defs()
    assert gc.get_freeze_count() > 0
