"""The Dagster code location of a librarian.

A few lines by design: each domain (ingest, cloning, sneakernet, maintenance) contributes its
assets, jobs and sensors through its own package; this module only merges them with the
shared resources. Nothing here reads configuration: resources resolve it at run time.
"""

from __future__ import annotations

import dagster as dg

from librarian_dagster.resources.librarian import CatalogueResource, StoresResource


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "catalogue": CatalogueResource(),
            "stores": StoresResource(),
        },
    )


defs = build_definitions()
