"""The Dagster code location of a librarian.

A few lines by design: each domain (ingest, cloning, sneakernet, maintenance) contributes its
assets, jobs and sensors through its own package; this module only merges them with the
shared resources. Nothing here reads configuration: resources resolve it at run time.
"""

from __future__ import annotations

import warnings

import dagster as dg

from librarian_dagster.assets.book import book, checksums_match
from librarian_dagster.jobs.ingest import ingest_books
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.sensors.ingest import ingest_sensor

# Dagster's own sensor decorator passes a beta parameter; that is not ours to act on.
warnings.filterwarnings("ignore", category=dg.BetaWarning, module=r"dagster\._core")


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[book],
        asset_checks=[checksums_match],
        jobs=[ingest_books],
        sensors=[ingest_sensor],
        resources={
            "catalogue": CatalogueResource(),
            "stores": StoresResource(),
        },
    )


defs = build_definitions()
