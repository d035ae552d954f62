"""The burst guard: bad storage must never trigger mass re-fetch or deletion.

An integrity pass that finds more than ``[integrity] max_bad_fraction`` of the copies it
read on one store newly bad (and at least ``burst_min_bad`` of them: one bad copy is never a
burst), or that cannot read a store at all, or that meets ``FAILING_STREAK`` copies in a row
on one store that are missing or unreadable, *guards* that store: it raises one critical
``burst_guard`` event about it (grouped: a store that stays bad is one event). While that
event is open, automatic repair and deletion leave the store alone
(``guarded_stores``), and the bad copies found stay recorded and out of service, as they
are. An operator resolves the event (``librarian events resolve``) once the storage is
sound again; that lifts the guard.

Why the streak: a disk going away under a pass makes every read fail. Without it, one pass
would record every copy on it as missing before the fraction was ever looked at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Event
from librarian_dagster.services.events import Raised, raise_event
from librarian_dagster.states import Severity

GUARD_KIND = "burst_guard"
FAILING_STREAK = 10


@dataclass(frozen=True)
class GuardPolicy:
    max_bad_fraction: float = 0.01
    min_bad: int = 2


def burst_reason(read: int, bad: int, policy: GuardPolicy) -> str | None:
    """Why ``bad`` new bad copies out of ``read`` on one store are a burst, or None."""
    if read <= 0 or bad < policy.min_bad or bad <= policy.max_bad_fraction * read:
        return None
    return (
        f"{bad} of {read} copies read in one pass were bad ({bad / read:.1%}, more than "
        f"max_bad_fraction {policy.max_bad_fraction:.1%})"
    )


def trip(session: Session, store: str, reason: str) -> Raised:
    return raise_event(
        session,
        Severity.CRITICAL,
        GUARD_KIND,
        f"store {store}: {reason}; automatic repair and deletion are off for it until this "
        "event is resolved (librarian events resolve)",
        subject=store,
        details={"reason": reason},
    )


def guarded_stores(session: Session, stores: Iterable[str] | None = None) -> set[str]:
    """Stores whose guard is up (an open ``burst_guard`` event names them)."""
    statement = select(Event.subject).where(
        Event.kind == GUARD_KIND, Event.resolved.is_(False), Event.subject.is_not(None)
    )
    if stores is not None:
        statement = statement.where(Event.subject.in_(list(stores)))
    return {subject for subject in session.scalars(statement) if subject is not None}
