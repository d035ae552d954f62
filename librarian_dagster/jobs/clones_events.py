"""What the UI shows of books on their way to a peer: observations of ``peers/<name>``.

A ``clone_batch`` run that submitted a batch observes each of its books on the peer's asset
("in flight": batch, mover, task); one that settled it observes the books that are to be
sent again or failed for good, with the reason. The materialization of a partition comes
later, when the peer confirms the copy (``sensors.clones_copies``). Per batch, these are
as many events as books: one small row each in Dagster's event log.
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
            ).all()
        state = f"in flight: batch {batch_id}, {outcome.mover} task {outcome.task_id}"
        for name in names:
            yield dg.AssetObservation(asset_key=key, partition=name, metadata={"copy": state})
    for name in outcome.resent:
        yield dg.AssetObservation(
            asset_key=key, partition=name, metadata={"copy": f"to be sent again ({outcome.fault})"}
        )
    for name in outcome.failed:
        yield dg.AssetObservation(
            asset_key=key,
            partition=name,
            metadata={"copy": "failed: see `librarian transfer list`"},
        )
