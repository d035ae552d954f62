"""Which staged transfers need ingesting, in what groups, and who already asked for it.

Two paths ask for ingest: the API at commit (``services.ingest_launcher``) and the ingest
sensor as the backstop. Both group transfers the same way (capped in books and bytes) and
record when they asked (``launched_at``), so that the other path leaves those transfers
alone until the request is overdue. How a group becomes a run is the orchestrator's
business (``jobs/``); this module only reads and marks the catalogue.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import IncomingTransfer
from librarian_dagster.states import TransferKind, TransferStatus

# What the ingest sensor handles; clones have their own sensor and job (receive_clones).
INGEST_KINDS = (TransferKind.UPLOAD, TransferKind.INBOX, TransferKind.SNEAKER)


@dataclass(frozen=True)
class StagedItem:
    transfer_id: int
    name: str
    size: int
    # Who asked for it at commit (the uploader's account); None when a sensor found it.
    committed_by: str | None = None


def group_for_runs(
    items: Iterable[StagedItem], max_books: int, max_bytes: int
) -> list[list[StagedItem]]:
    """Consecutive groups, each at most ``max_books`` books and ``max_bytes`` bytes.

    A book larger than ``max_bytes`` gets a run of its own rather than being refused.
    """
    groups: list[list[StagedItem]] = []
    current: list[StagedItem] = []
    current_bytes = 0
    for item in items:
        if current and (len(current) >= max_books or current_bytes + item.size > max_bytes):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item.size
    if current:
        groups.append(current)
    return groups


def _set_launched(catalogue: Catalogue, transfer_ids: Sequence[int], when: datetime | None) -> None:
    if not transfer_ids:
        return
    with catalogue.session() as session:
        session.execute(
            update(IncomingTransfer)
            .where(
                IncomingTransfer.id.in_(transfer_ids),
                IncomingTransfer.status == TransferStatus.STAGED,
            )
            .values(launched_at=when)
        )


def mark_launched(catalogue: Catalogue, transfer_ids: Sequence[int]) -> None:
    """Record that a run was requested for these transfers (only those still staged)."""
    _set_launched(catalogue, transfer_ids, datetime.now(UTC))


def clear_launched(catalogue: Catalogue, transfer_ids: Sequence[int]) -> None:
    """A run request failed: let the sensor ask again on its next tick."""
    _set_launched(catalogue, transfer_ids, None)


def staged_needing_runs(
    catalogue: Catalogue,
    *,
    relaunch_after_seconds: float,
    limit: int,
    kinds: Collection[TransferKind] = INGEST_KINDS,
) -> list[StagedItem]:
    """Staged transfers of these kinds with no run requested, or whose request is overdue;
    oldest first.

    Served by the ``(status, id)`` index: only pending rows are ``staged``, so this stays
    cheap however large the catalogue grows.
    """
    overdue = datetime.now(UTC) - timedelta(seconds=relaunch_after_seconds)
    with catalogue.session() as session:
        rows = session.execute(
            select(IncomingTransfer.id, IncomingTransfer.name, IncomingTransfer.size)
            .where(
                IncomingTransfer.status == TransferStatus.STAGED,
                IncomingTransfer.kind.in_(list(kinds)),
                or_(IncomingTransfer.launched_at.is_(None), IncomingTransfer.launched_at < overdue),
            )
            .order_by(IncomingTransfer.id)
            .limit(limit)
        ).all()
    return [StagedItem(row.id, row.name, row.size) for row in rows]


def verifying_transfers(
    catalogue: Catalogue, limit: int, kinds: Collection[TransferKind] = INGEST_KINDS
) -> list[tuple[StagedItem, str | None]]:
    """Transfers some run claimed, with that run's id: the sensor checks they are alive."""
    with catalogue.session() as session:
        rows = session.execute(
            select(
                IncomingTransfer.id,
                IncomingTransfer.name,
                IncomingTransfer.size,
                IncomingTransfer.run_id,
            )
            .where(
                IncomingTransfer.status == TransferStatus.VERIFYING,
                IncomingTransfer.kind.in_(list(kinds)),
            )
            .order_by(IncomingTransfer.id)
            .limit(limit)
        ).all()
    return [(StagedItem(row.id, row.name, row.size), row.run_id) for row in rows]
