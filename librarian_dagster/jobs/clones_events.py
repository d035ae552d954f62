"""What the UI shows of books on their way to a peer: observations of ``peers/<name>``.

One observation per batch step, not per book: a ``clone_batch`` run that submitted a batch
observes the peer's asset with the batch, the mover's task and the books in flight; one
that settled it, with the books to be sent again or failed for good and why. (An event per
book cost ~46 ms each in Dagster's SQLite event log, measured: 47 s for a batch of 1,024.)
A book's partition on the peer's asset is materialized when the peer confirms its copy
(``sensors.clones_copies``); until then it is missing, and its batch's observation (the
asset's *Events*) says where it is.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
from sqlalchemy import select

from librarian_dagster.assets.clones import peer_asset_key
from librarian_dagster.catalogue.models import File, OutgoingTransfer
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.clones_batch import BatchOutcome
from librarian_dagster.states import TransferStatus

# Book names one observation lists (the count is always whole).
LISTED = 1024


def in_flight_observations(
    catalogue: CatalogueResource, batch_id: int, outcome: BatchOutcome
) -> Iterator[dg.AssetObservation]:
    key = peer_asset_key(outcome.peer)
    if outcome.step == "submitted":
        with catalogue.session() as session:
            names = session.scalars(
                select(File.name)
                .join(OutgoingTransfer, OutgoingTransfer.file_id == File.id)
                .where(
                    OutgoingTransfer.batch_id == batch_id,
                    OutgoingTransfer.status == TransferStatus.ONGOING,
                )
                .order_by(File.id)
            ).all()
        yield dg.AssetObservation(
            asset_key=key,
            metadata={
                "state": f"in flight: batch {batch_id}, {outcome.mover} task {outcome.task_id}",
                "books": dg.MetadataValue.int(len(names)),
                "in flight": dg.MetadataValue.json(list(names[:LISTED])),
            },
        )
    if outcome.resent or outcome.failed:
        yield dg.AssetObservation(
            asset_key=key,
            metadata={
                "state": f"batch {batch_id} settled: {outcome.detail}",
                "to be sent again": dg.MetadataValue.json(outcome.resent[:LISTED]),
                "failed for good (see librarian transfer list)": dg.MetadataValue.json(
                    outcome.failed[:LISTED]
                ),
                "fault": outcome.fault or "",
            },
        )
