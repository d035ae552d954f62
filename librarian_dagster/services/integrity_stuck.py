"""Runs that stopped moving, counted per cause: how many tries a fill or drive ingest has left.

``sensors.integrity_stuck`` cancels a fill or drive-ingest run with no progress for
``[transfer] stuck_after_hours`` and raises one ``run_stuck`` event per cause (the job and
the drive it works on); each further stall of the same cause bumps that event's count.
The sensors that ask for those runs read the count here: below ``[transfer]
max_attempts`` they ask again (``stuck_key`` is part of the run key, so a new run is asked
for although nothing else changed), at it they stop and say so, and an operator who
resolves the event gives the cause its tries back (and a new key). A run of the cause that finishes
resolves it too (``clear_stuck``). The event's ``created_at`` is when the cause first
stalled; nothing resets it while it is open.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Event
from librarian_dagster.services.events import open_event, resolve_cause

STUCK_KIND = "run_stuck"


def stuck_subject(job_name: str, target: str) -> str:
    """The cause a stalled run is counted under: its job and the store or drive it works on."""
    return f"{job_name}:{target}"


def stuck_tries(session: Session, job_name: str, target: str) -> int:
    """How many runs of this cause were cancelled as stuck since it was last resolved."""
    event = open_event(session, STUCK_KIND, stuck_subject(job_name, target))
    return event.count if event is not None else 0


def stuck_key(session: Session, job_name: str, target: str) -> str:
    """A run-key suffix that changes with every stall of this cause and every resolution
    of it ("" before its first stall). Dagster never asks twice for one run key, and the
    stalled run holds the key it was asked for under: without this, a fill whose drive
    hung before it moved its mark would never be asked for again."""
    event = session.scalar(
        select(Event)
        .where(Event.kind == STUCK_KIND, Event.subject == stuck_subject(job_name, target))
        .order_by(Event.id.desc())
        .limit(1)
    )
    if event is None:
        return ""
    return f":stuck{event.id}.{event.count}" + (".resolved" if event.resolved else "")


def out_of_tries(tries: int, max_attempts: int) -> str:
    """Why no run is asked for, or "" while tries are left."""
    if tries < max_attempts:
        return ""
    return (
        f"{tries} runs stalled and were cancelled; not asked again until the "
        f"{STUCK_KIND} event is resolved (`librarian events resolve`)"
    )


def clear_stuck(session: Session, job_name: str, target: str) -> int:
    """A run of this cause finished: its stalls are over. Returns the events closed."""
    return resolve_cause(
        session, STUCK_KIND, stuck_subject(job_name, target), "finished run", "a later run finished"
    )
