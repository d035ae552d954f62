"""``peer_copies_sensor``: copies peers confirmed → the UI (materializations, observations).

For every remote instance recorded since the last tick (a high-water mark over its id, at
most ``PER_TICK`` a tick), the partition of that book on the peer's asset
(``peers/<name>``) is materialized, and the book's own partition (``book``) gets an
observation listing every copy we know of: here, and at each peer. Rows are read only once
they are ``[transfer] catalogue_lag_seconds`` old, so that a transaction that took an id
before another but committed after it (PostgreSQL) is not skipped by the mark. The
catalogue stays the truth; this is its picture in Dagster.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.assets.clones import peer_asset_key
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.copies import copies_of, remote_instances_since

PER_TICK = 1000


@dg.sensor(
    name="peer_copies_sensor",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Shows copies peers confirmed: materializes peers/<name>, observes book.",
)
def peer_copies_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    since = int(context.cursor or 0)
    lag = timedelta(seconds=catalogue.settings.transfer.catalogue_lag_seconds)
    with catalogue.session() as session:
        rows = remote_instances_since(
            session, since, before=datetime.now(UTC) - lag, limit=PER_TICK
        )
        copies = copies_of(session, sorted({row.file_id for row in rows}))
    if not rows:
        return dg.SensorResult(skip_reason="no new copy at a peer")
    events: list[dg.AssetMaterialization | dg.AssetObservation] = [
        dg.AssetMaterialization(
            asset_key=peer_asset_key(row.peer),
            partition=row.name,
            metadata={"peer": row.peer, "store": row.store},
        )
        for row in rows
    ]
    for name, where in copies.values():
        events.append(
            dg.AssetObservation(
                asset_key=BOOK_KEY, partition=name, metadata={"copies": "; ".join(where)}
            )
        )
    return dg.SensorResult(asset_events=events, cursor=str(max(row.id for row in rows)))


SENSORS = [peer_copies_sensor]
