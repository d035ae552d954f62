"""Which peers have not answered for too long, and which have come back.

Every call to a peer records how it went (``peers.record_contact``: ``last_seen_at`` on
success, ``last_error`` and ``last_error_at`` on failure). A peer is *down* when its last
call failed and it has not answered for ``[transfer] peer_unreachable_alert_hours`` (since
its last success, or since it was added): a link down for minutes is the outbox's and the
retries' business, one down for hours is an operator's. A down peer gets one grouped
``peer_unreachable`` event (the notifier's alert); when it answers again, that event is
resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Event, Librarian
from librarian_dagster.services.events import resolve_cause

PEER_DOWN_KIND = "peer_unreachable"


@dataclass(frozen=True)
class PeerDown:
    name: str
    since: datetime
    last_error: str


def peers_down(session: Session, hours: float, now: datetime) -> list[PeerDown]:
    cutoff = now - timedelta(hours=hours)
    down = []
    for peer in session.scalars(select(Librarian).where(Librarian.last_error_at.is_not(None))):
        since = peer.last_seen_at or peer.created_at
        if peer.last_error_at is not None and peer.last_error_at >= since and since < cutoff:
            down.append(PeerDown(peer.name, since, peer.last_error or "?"))
    return down


def resolve_peers_back(session: Session) -> list[str]:
    """Resolve the open ``peer_unreachable`` events of peers whose last call succeeded."""
    open_subjects = session.scalars(
        select(Event.subject).where(Event.kind == PEER_DOWN_KIND, Event.resolved.is_(False))
    ).all()
    back = []
    for name in {subject for subject in open_subjects if subject}:
        peer = session.scalar(select(Librarian).where(Librarian.name == name))
        if peer is None or peer.last_error_at is None:
            resolve_cause(session, PEER_DOWN_KIND, name, "peer_health_sensor", "answers again")
            back.append(name)
    return back
