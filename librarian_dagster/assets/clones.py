"""Per peer, one asset: which books it holds. Materialized when the peer confirms a copy.

``peers/<name>`` is partitioned by the same ``books`` partitions as ``book``: its partition
``k`` is materialized when the peer has confirmed it holds book ``k`` (a remote instance:
reported by ``peer_copies_sensor``), and observed while ``k`` is on its way there (batch,
mover task) or after it failed. So, in the UI, a peer's asset shows which books it is
missing (its unmaterialized partitions), and *Materialize missing* (a backfill) sends them
again: the asset's run only queues the books for the clone pipeline (``requeue_books``:
ones in flight or held are left alone) and materializes nothing itself, because a book is
not at the peer until the peer says so.

Why one asset per peer and not one ``books x sites`` asset: Dagster advises ≤ 100,000
partitions per asset, a librarian ingests ~70,000 books a year, and a multi-partitioned
asset multiplies its keys by the number of sites; an asset per peer shares the ``books``
keys (see docs/architecture.md). Peers are runtime data (``librarian peer add``), so the
assets are built when the code location loads (``definitions.defs``), from the catalogue.
"""

import hashlib
import re
from collections.abc import Iterator, Sequence

import dagster as dg

from librarian_dagster.assets.book import BOOK_KEY, books_partitions
from librarian_dagster.jobs.names import PEER_ASSET_PREFIX, PEER_TAG
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.peers import get_peer
from librarian_dagster.services.transfers import requeue_books

GROUP = "peers"


def peer_asset_key(peer: str) -> dg.AssetKey:
    return dg.AssetKey([PEER_ASSET_PREFIX, peer])


def _op_name(peer: str) -> str:
    """A unique op name for the peer's asset: peer names may hold ``-`` and ``.``, which op
    names may not, and ``site-b`` and ``site_b`` must not meet as one op."""
    digest = hashlib.sha256(peer.encode()).hexdigest()[:8]
    return f"copies_at_{re.sub(r'[^A-Za-z0-9_]', '_', peer)}_{digest}"


def peer_asset(peer: str) -> dg.AssetsDefinition:
    """The asset of one peer's copies (see the module docstring)."""

    @dg.multi_asset(
        name=_op_name(peer),
        specs=[
            dg.AssetSpec(
                key=peer_asset_key(peer),
                deps=[BOOK_KEY],
                partitions_def=books_partitions,
                group_name=GROUP,
                skippable=True,
                kinds={"librarian"},
                description=(
                    f"Books the peer librarian {peer!r} holds, one partition per book: "
                    "materialized when it confirms a copy, observed while one is on its way. "
                    "Materializing missing partitions sends those books (again)."
                ),
                metadata={"peer": peer},
            )
        ],
        backfill_policy=dg.BackfillPolicy.single_run(),
        op_tags={PEER_TAG: peer},
    )
    def copies(context: dg.AssetExecutionContext, catalogue: CatalogueResource) -> Iterator[None]:
        names = list(context.partition_keys)
        with catalogue.session() as session:
            queued, left = requeue_books(session, get_peer(session, peer), names)
        context.log.info(
            f"{queued} of {len(names)} books queued for {peer} (the clone sensor batches "
            f"them); {left} are held there or on their way already"
        )
        yield from ()  # materialized only when the peer confirms a copy

    return copies


def peer_assets(peers: Sequence[str]) -> list[dg.AssetsDefinition]:
    return [peer_asset(peer) for peer in sorted(set(peers))]


__all__ = ["GROUP", "peer_asset", "peer_asset_key", "peer_assets"]
