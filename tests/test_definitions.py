"""The Dagster code location loads, and the repo's instance files match what serve writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import yaml

from librarian_dagster.dagster_instance import (
    instance_config,
    prepare_dagster_home,
    workspace_config,
)
from librarian_dagster.definitions import defs
from librarian_dagster.settings import LibrarianSettings

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_resources_resolve(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    settings = make_settings()
    assert isinstance(defs, dg.Definitions)
    repository = defs.get_repository_def()
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
