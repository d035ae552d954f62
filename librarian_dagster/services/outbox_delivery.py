"""Delivering the callback outbox: every owed call, to every peer, until it takes it.

``deliver`` takes due rows (leased, ``outbox.take_due``), merges the ones that can go as one
request (same peer, same route, same fixed fields: their lists of transfers are joined, at
most ``MAX_CLONE_ITEMS`` a request), calls the peer outside any transaction and marks each
row delivered or failed. A failed call backs off (``[transfer] callback_backoff_seconds``,
doubling to ``callback_backoff_max_seconds``) and is tried again for as long as it takes: a
peer down for a day costs only delay. A merged request the peer refuses as a whole (4xx) is
split so that one bad row does not hold up the others. Every route is idempotent, so a
deliverer killed after the call but before the mark only sends a row twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import Librarian
from librarian_dagster.services import outbox
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.peers import PeerLink, PeerLinks, access_of, record_contact
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.wire.clones import MAX_CLONE_ITEMS
from librarian_dagster.wire.sneaker import COMPLETE_LIST_KEY

# The payload keys whose lists can be joined across rows of one route.
LIST_KEYS = ("transfers", "transfer_ids", COMPLETE_LIST_KEY)
# Statuses a peer answers to a request it will refuse again: split a merged request.
_PERMANENT = frozenset({400, 403, 404, 409, 413, 422})


@dataclass
class Delivery:
    """What one pass delivered: rows taken, delivered, failed; peers that did not answer."""

    taken: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _merge_key(callback: outbox.Callback) -> tuple[Any, ...]:
    fixed = tuple(sorted((k, repr(v)) for k, v in callback.payload.items() if k not in LIST_KEYS))
    lists = tuple(sorted(k for k in callback.payload if k in LIST_KEYS))
    return (callback.librarian_id, callback.route, fixed, lists)


def _requests(callbacks: Sequence[outbox.Callback]) -> list[list[outbox.Callback]]:
    """Rows that go as one request each: merged where they can be, capped in items."""
    groups: dict[tuple[Any, ...], list[outbox.Callback]] = defaultdict(list)
    for callback in callbacks:
        groups[_merge_key(callback)].append(callback)
    requests: list[list[outbox.Callback]] = []
    for key, group in groups.items():
        if not key[3]:  # no list to join: one request per row
            requests.extend([callback] for callback in group)
            continue
        current: list[outbox.Callback] = []
        items = 0
        for callback in group:
            size = sum(len(callback.payload[k]) for k in key[3])
            if current and items + size > MAX_CLONE_ITEMS:
                requests.append(current)
                current, items = [], 0
            current.append(callback)
            items += size
        if current:
            requests.append(current)
    return requests


def _payload(rows: Sequence[outbox.Callback]) -> dict[str, Any]:
    merged = dict(rows[0].payload)
    for key in LIST_KEYS:
        if key in merged:
            merged[key] = [item for row in rows for item in row.payload[key]]
    return merged


def deliver(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    links: PeerLinks,
    *,
    limit: int = 5000,
    callback_ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> Delivery:
    """Deliver what is due (or just ``callback_ids``, at once); see the module docstring."""
    now = now or datetime.now(UTC)
    with catalogue.session() as session:
        due = outbox.take_due(session, limit=limit, callback_ids=callback_ids, now=now)
        peers = {
            peer.id: access_of(settings, peer)
            for peer in session.scalars(
                select(Librarian).where(Librarian.id.in_({row.librarian_id for row in due}))
            )
        }
    report = Delivery(taken=len(due))
    by_peer: dict[int, list[list[outbox.Callback]]] = defaultdict(list)
    for request in _requests(due):
        by_peer[request[0].librarian_id].append(request)
    for peer_id, requests in by_peer.items():
        link = links(peers[peer_id])
        error = None
        try:
            for request in requests:
                error = _send(catalogue, settings, link, request, report) or error
        finally:
            link.close()
        with catalogue.session() as session:
            record_contact(session, peer_id, error)
    return report


def _send(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    link: PeerLink,
    rows: list[outbox.Callback],
    report: Delivery,
) -> str | None:
    """Send one request; the error that kept it from the peer, if any."""
    try:
        link.post(rows[0].route, _payload(rows))
    except PeerCallFailed as error:
        if len(rows) > 1 and error.peer_status in _PERMANENT:
            errors = [_send(catalogue, settings, link, [row], report) for row in rows]
            return next((e for e in errors if e), None)  # one bad row holds up no other
        transfer = settings.transfer
        with catalogue.session() as session:
            for row in rows:
                outbox.mark_failed(
                    session,
                    row.id,
                    str(error),
                    first=timedelta(seconds=transfer.callback_backoff_seconds),
                    maximum=timedelta(seconds=transfer.callback_backoff_max_seconds),
                )
        report.failed += len(rows)
        report.errors.append(str(error))
        return str(error)
    with catalogue.session() as session:
        for row in rows:
            outbox.mark_delivered(session, row.id)
    report.delivered += len(rows)
    return None
