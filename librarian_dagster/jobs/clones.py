"""The clone jobs: send a batch, receive clones, deliver callbacks, ask about stale books.

- ``clone_batch`` (pinned): takes one batch as far as it can go now
  (``services.clones.run_batch``: stage at the peer, submit to the mover, or settle the
  task), then delivers the callbacks it wrote at once (the outbox sensor is the backstop).
  A batch that cannot go on (peer down, mover refusing) fails the run with the reason and
  is retried after a back-off; nothing is lost. A run in which books failed for good (a
  conflict at the peer, out of attempts) fails too, after recording them. Its metadata:
  peer, books, bytes, mover, task id, seconds, MB/s, fault.
- ``receive_clones`` (pinned): verifies and stores clones a peer delivered, through the
  same loop as uploads (``jobs.ingest.ingest_transfers``), then delivers the callbacks its
  books owe their senders.
- ``deliver_callbacks``: the outbox's backstop; fails while a peer does not take what it
  is owed (retried with back-off, never given up).
- ``reconcile_clones``: asks peers about books they never confirmed.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from librarian_dagster.jobs.clones_events import in_flight_observations
from librarian_dagster.jobs.ingest import ingest_transfers
from librarian_dagster.jobs.names import (
    CALLBACKS_KIND,
    CLONE_JOB,
    CLONE_KIND,
    CLONE_OP,
    DELIVER_JOB,
    DELIVER_OP,
    KIND_TAG,
    RECEIVE_JOB,
    RECEIVE_KIND,
    RECEIVE_OP,
    RECONCILE_JOB,
    RECONCILE_OP,
)
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.resources.movers import MoverResource
from librarian_dagster.resources.peers import PeersResource
from librarian_dagster.services.clones_batch import BatchDeferred, BatchOutcome
from librarian_dagster.services.clones_run import run_batch
from librarian_dagster.services.clones_settle import reconcile
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.outbox_delivery import Delivery, deliver
from librarian_dagster.units import human_size


class CloneBatchConfig(dg.Config):
    batch_id: int = Field(description="The clone batch to take further (transfer_batches.id).")


class ReceiveConfig(dg.Config):
    transfer_ids: list[int] = Field(description="Incoming clones (staged) to verify and store.")


class ReconcileConfig(dg.Config):
    peer_id: int = Field(description="The peer to ask.")
    transfer_ids: list[int] = Field(description="Outgoing transfers it never confirmed.")


def _metadata(outcome: BatchOutcome) -> dict[str, Any]:
    rate = outcome.bytes / 1e6 / outcome.seconds if outcome.seconds > 0 else 0.0
    return {
        "peer": outcome.peer,
        "step": outcome.step,
        "books": dg.MetadataValue.int(outcome.books),
        "bytes": dg.MetadataValue.int(outcome.bytes),
        "size (human)": human_size(outcome.bytes),
        "mover": outcome.mover or "",
        "mover task id": outcome.task_id or "",
        "seconds": dg.MetadataValue.float(round(outcome.seconds, 3)),
        "MB/s": dg.MetadataValue.float(round(rate, 1)),
        "fault": outcome.fault or "",
        "arrived": dg.MetadataValue.int(len(outcome.arrived)),
        "to be sent again": dg.MetadataValue.json(outcome.resent[:100]),
        "failed for good": dg.MetadataValue.json(outcome.failed[:100]),
    }


def _deliver_now(
    context: dg.OpExecutionContext,
    catalogue: CatalogueResource,
    peers: PeersResource,
    callback_ids: list[int] | None,
) -> Delivery:
    """Deliver callbacks now (a run's own, or whatever is due); failures wait for the sensor."""
    report = deliver(
        catalogue.catalogue, catalogue.settings, peers.links(), callback_ids=callback_ids
    )
    for error in report.errors:
        context.log.warning(f"callback not delivered (retried later): {error}")
    return report


@dg.op(name=CLONE_OP, tags={KIND_TAG: CLONE_KIND}, out=dg.Out(dg.Nothing))
def send_batch(
    context: dg.OpExecutionContext,
    config: CloneBatchConfig,
    catalogue: CatalogueResource,
    mover: MoverResource,
    peers: PeersResource,
):  # type: ignore[no-untyped-def]
    try:
        outcome = run_batch(
            catalogue.catalogue,
            catalogue.settings,
            config.batch_id,
            links=peers.links(),
            movers=mover.available(),
        )
    except BatchDeferred as deferred:
        context.log.error(f"batch {config.batch_id}: {deferred.outcome.detail}")
        raise dg.Failure(
            description=deferred.outcome.detail, metadata=_metadata(deferred.outcome)
        ) from None
    context.log.info(f"batch {config.batch_id} to {outcome.peer}: {outcome.detail}")
    for event in in_flight_observations(catalogue, config.batch_id, outcome):
        context.log_event(event)
    if outcome.callbacks:
        _deliver_now(context, catalogue, peers, outcome.callbacks)
    if outcome.failed:  # refused by the peer, or out of attempts: red, after recording it
        raise dg.Failure(
            description=f"{len(outcome.failed)} books failed for good: {outcome.detail}",
            metadata=_metadata(outcome),
        )
    yield dg.Output(None, metadata=_metadata(outcome))


@dg.job(
    name=CLONE_JOB,
    description="Take one clone batch further: stage at the peer, submit, or settle.",
    tags={KIND_TAG: CLONE_KIND},
    executor_def=dg.in_process_executor,
)
def clone_batch() -> None:
    send_batch()


@dg.op(name=RECEIVE_OP, tags={KIND_TAG: RECEIVE_KIND})
def receive_and_store(
    context: dg.OpExecutionContext,
    config: ReceiveConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
    peers: PeersResource,
) -> None:
    try:
        ingest_transfers(context, catalogue, stores, config.transfer_ids)
    finally:  # refused books owe their senders a callback too
        _deliver_now(context, catalogue, peers, None)


@dg.job(
    name=RECEIVE_JOB,
    description="Verify clones a peer delivered, store them, and tell the sender.",
    tags={KIND_TAG: RECEIVE_KIND},
    executor_def=dg.in_process_executor,
)
def receive_clones() -> None:
    receive_and_store()


@dg.op(name=DELIVER_OP, tags={KIND_TAG: CALLBACKS_KIND}, out=dg.Out(dg.Nothing))
def deliver_owed_callbacks(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, peers: PeersResource
):  # type: ignore[no-untyped-def]
    report = _deliver_now(context, catalogue, peers, None)
    metadata = {
        "taken": dg.MetadataValue.int(report.taken),
        "delivered": dg.MetadataValue.int(report.delivered),
        "not delivered": dg.MetadataValue.int(report.failed),
        "errors": dg.MetadataValue.json(report.errors[:20]),
    }
    if report.failed:
        raise dg.Failure(
            description=f"{report.failed} callbacks not delivered (retried later): "
            f"{report.errors[0]}",
            metadata=metadata,
        )
    yield dg.Output(None, metadata=metadata)


@dg.job(
    name=DELIVER_JOB,
    description="Deliver the callbacks we owe peers (the outbox's backstop).",
    tags={KIND_TAG: CALLBACKS_KIND},
    executor_def=dg.in_process_executor,
)
def deliver_callbacks() -> None:
    deliver_owed_callbacks()


@dg.op(name=RECONCILE_OP, tags={KIND_TAG: CALLBACKS_KIND}, out=dg.Out(dg.Nothing))
def ask_peers_about_stale_clones(
    context: dg.OpExecutionContext,
    config: ReconcileConfig,
    catalogue: CatalogueResource,
    peers: PeersResource,
):  # type: ignore[no-untyped-def]
    try:
        outcome = reconcile(
            catalogue.catalogue,
            catalogue.settings,
            config.peer_id,
            config.transfer_ids,
            peers.links(),
        )
    except PeerCallFailed as error:
        raise dg.Failure(description=f"could not ask the peer: {error.detail}") from None
    context.log.info(
        f"{outcome.peer}: {len(outcome.held)} held, {len(outcome.waiting)} still on their "
        f"way, {len(outcome.resent)} to be sent again, {len(outcome.failed)} failed"
    )
    yield dg.Output(
        None,
        metadata={
            "peer": outcome.peer,
            "held": dg.MetadataValue.json(outcome.held[:100]),
            "to be sent again": dg.MetadataValue.json(outcome.resent[:100]),
            "failed": dg.MetadataValue.json(outcome.failed[:100]),
        },
    )


@dg.job(
    name=RECONCILE_JOB,
    description="Ask peers about books they never confirmed: held, on their way, or absent.",
    tags={KIND_TAG: CALLBACKS_KIND},
    executor_def=dg.in_process_executor,
)
def reconcile_clones() -> None:
    ask_peers_about_stale_clones()


JOBS = [clone_batch, receive_clones, deliver_callbacks, reconcile_clones]
