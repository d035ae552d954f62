"""The Dagster code location of a librarian: every flow's definitions, merged.

Each flow lists what it contributes in its own modules (``assets/``, ``jobs/``,
``sensors/``, one file name per flow); this module only merges those lists with the
resources, which are the same keys everywhere (``resources.librarian_resources``).

``defs`` is loaded lazily (``@dg.definitions``), when Dagster loads the location, never at
import: it reads the peers from the catalogue, because each peer has an asset of its own
(``assets.clones``). If the catalogue cannot be read then, the location still loads, with
no peer assets and a warning; cloning itself does not depend on them. Resources resolve
their configuration when a run starts.

Once loaded, the process's objects are frozen out of the garbage collector (``gc.freeze``):
a code server lives for months with the ~220,000 objects its imports made, and every full
collection walked them all, ~150 ms in the middle of whichever sensor tick allocated last
(``benchmarks/README.md``, clone sensor tick); frozen, such a collection takes ~10 ms. Only
what exists at load is frozen; what sensors and runs allocate afterwards is collected as
before.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

import dagster as dg

from librarian_dagster.assets import book, integrity
from librarian_dagster.assets.clones import peer_assets
from librarian_dagster.jobs import clones as clone_jobs
from librarian_dagster.jobs import ingest as ingest_jobs
from librarian_dagster.jobs import integrity as integrity_jobs
from librarian_dagster.jobs import integrity_scan
from librarian_dagster.jobs import sneaker as sneaker_jobs
from librarian_dagster.resources import librarian_resources
from librarian_dagster.sensors import clones as clone_sensors
from librarian_dagster.sensors import (
    clones_copies,
    clones_receive,
    integrity_alerts,
    integrity_stuck,
)
from librarian_dagster.sensors import ingest as ingest_sensors
from librarian_dagster.sensors import integrity as integrity_sensors
from librarian_dagster.sensors import sneaker as sneaker_sensors

log = logging.getLogger(__name__)

ASSETS = [*book.ASSETS]
ASSET_CHECKS = [*integrity.ASSET_CHECKS]
JOBS = [
    *ingest_jobs.JOBS,
    *clone_jobs.JOBS,
    *sneaker_jobs.JOBS,
    *integrity_jobs.JOBS,
    *integrity_scan.JOBS,
]
SENSORS = [
    *ingest_sensors.SENSORS,
    *clone_sensors.SENSORS,
    *clones_receive.SENSORS,
    *clones_copies.SENSORS,
    *sneaker_sensors.SENSORS,
    *integrity_sensors.SENSORS,
    *integrity_alerts.SENSORS,
    *integrity_stuck.SENSORS,
]
SCHEDULES: list[dg.ScheduleDefinition] = [*integrity_sensors.SCHEDULES]


def build_definitions(peers: Sequence[str] = ()) -> dg.Definitions:
    """The definitions, with an asset for each of ``peers``."""
    return dg.Definitions(
        assets=[*ASSETS, *peer_assets(peers)],
        asset_checks=ASSET_CHECKS,
        jobs=JOBS,
        sensors=SENSORS,
        schedules=SCHEDULES,
        resources=librarian_resources(),
    )


def known_peers() -> list[str]:
    """The peers in the catalogue of the librarian this process serves ([] if unreadable)."""
    from librarian_dagster.services.peer_names import peer_names

    try:
        return peer_names()
    except Exception as error:  # the location must load anyway: only peer assets are missing
        log.warning("peer assets left out: the catalogue could not be read (%s)", error)
        return []


@dg.definitions
def defs() -> dg.Definitions:
    definitions = build_definitions(known_peers())
    gc.freeze()  # the module docstring says why
    return definitions
