"""The Dagster code location of a librarian: every flow's definitions, merged.

Each flow lists what it contributes in its own modules (``assets/``, ``jobs/``,
``sensors/``, one file name per flow); this module only merges those lists with the
resources, which are the same keys everywhere (``resources.librarian_resources``). Nothing
here reads configuration: resources resolve it when a run starts.
"""

from __future__ import annotations

import dagster as dg

from librarian_dagster.assets import book, integrity
from librarian_dagster.jobs import ingest as ingest_jobs
from librarian_dagster.resources import librarian_resources
from librarian_dagster.sensors import ingest as ingest_sensors

ASSETS = [*book.ASSETS]
ASSET_CHECKS = [*integrity.ASSET_CHECKS]
JOBS = [*ingest_jobs.JOBS]
SENSORS = [*ingest_sensors.SENSORS]
SCHEDULES: list[dg.ScheduleDefinition] = []


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        sensors=SENSORS,
        schedules=SCHEDULES,
        resources=librarian_resources(),
    )


defs = build_definitions()
