"""What every librarian-to-librarian byte mover offers: submit a batch, poll it, cancel it.

A clone batch is one mover *task* carrying many (source, destination) pairs, because the
movers that matter work that way: Globus runs ~3 tasks per user at once and queues the rest,
allows ≤ 100 pending tasks and ≤ 20 requests a second, so one task per book would not scale
(stack notes). The catalogue records the task id; whoever polls later (a sensor, in another
process, possibly after a restart) asks the mover by that id alone, so a mover keeps no state
that only the submitting process knows.

A task is submitted under a *submission id* the caller got from the mover first and
recorded: submitting again with the same id (after a crash between the submit and the
record of its task id) returns the same task and moves nothing twice. Globus works this
way; ``LocalMover`` does the same.

Statuses are the librarian's, not the mover's: ``stalled`` is a task that will not move
again without an operator (Globus ``INACTIVE``, typically expired credentials), which the
librarian must alert on rather than wait for. A report carries per-item results as far as
the mover knows them, and the mover's own words for what went wrong (``fault``), which go
to the operator unchanged.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class TaskStatus(enum.StrEnum):
    ACTIVE = "active"  # queued or moving
    STALLED = "stalled"  # not moving, and will not without an operator
    SUCCEEDED = "succeeded"  # every item arrived (and, where the mover checks, verified)
    FAILED = "failed"  # gave up; ``fault`` says why
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class MoveItem:
    """One book to move: paths as this mover addresses them (local paths, collection paths).

    ``checksum`` is the book's catalogue checksum: a mover that hashes what it reads
    (``LocalMover``) refuses to deliver a source that does not match it. ``recursive`` says
    the book is a directory (Globus must be told).
    """

    source: str
    destination: str
    checksum: str | None = None
    recursive: bool = False


@dataclass(frozen=True)
class ItemResult:
    item: MoveItem
    done: bool
    fault: str | None = None
    # The checksum of what was read, when the mover hashed it.
    checksum: str | None = None


@dataclass(frozen=True)
class TaskReport:
    """A mover's answer to "how is task ``task_id`` doing?"."""

    task_id: str
    status: TaskStatus
    items: tuple[ItemResult, ...] = ()
    fault: str | None = None
    bytes_moved: int = 0

    @property
    def failed_items(self) -> tuple[ItemResult, ...]:
        return tuple(result for result in self.items if result.fault is not None)


class MoverError(Exception):
    """A mover could not do what was asked (submit, poll, cancel); nothing was submitted.

    ``needs_operator`` marks errors that retrying will not cure (credentials expired or
    revoked, a collection that does not exist): the librarian alerts instead of retrying.
    """

    def __init__(self, message: str, *, needs_operator: bool = False) -> None:
        super().__init__(message)
        self.needs_operator = needs_operator


class MoverUnavailable(MoverError):
    """No mover of that name on this librarian (not configured, or not built)."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        offered = ", ".join(sorted(known)) if known else "none yet"
        super().__init__(
            f"no {name!r} mover on this librarian (available: {offered})", needs_operator=True
        )
        self.name = name


@runtime_checkable
class Mover(Protocol):
    """A byte mover between librarians (SPEC §9): one task per batch."""

    #: The name peers are configured with (``"local"``, ``"globus"``).
    name: str

    def new_submission_id(self) -> str:
        """An id to record before ``submit``, so that a repeated submit is recognised."""
        ...

    def submit(
        self,
        items: Sequence[MoveItem],
        *,
        label: str,
        submission_id: str,
        endpoint: str | None = None,
    ) -> str:
        """Start moving ``items`` as one task; return its id. Raises ``MoverError``.

        ``endpoint`` is the destination as the mover knows it (a Globus collection id; the
        local mover needs none). The same ``submission_id`` again returns the same task.
        """
        ...

    def status(self, task_id: str) -> TaskReport:
        """Where the task is; an unknown id raises ``MoverError``."""
        ...

    def cancel(self, task_id: str) -> None:
        """Stop the task (no-op once it is final); its report then says ``cancelled``."""
        ...


def match_results(report: TaskReport, items: Sequence[MoveItem]) -> tuple[ItemResult, ...]:
    """The report's verdict on each of ``items`` (what the caller submitted), by destination.

    An item is done when the task succeeded, or when its destination is among the files
    reported done; a directory item (``recursive``) when any file under its destination is.
    A partly moved directory thus counts as done: the receiving librarian verifies every
    book's checksum and refuses it. Once the task is over, the others are not done, with the
    task's fault; while it runs, they are left out (no verdict yet).
    """
    arrived: set[str] = set()
    under: set[str] = set()
    faults = {
        posixpath.normpath(result.item.destination): result.fault
        for result in report.items
        if not result.done and result.fault
    }
    for result in report.items:
        if result.done:
            path = posixpath.normpath(result.item.destination)
            arrived.add(path)
            while (parent := posixpath.dirname(path)) != path:
                under.add(parent)
                path = parent
    verdicts: list[ItemResult] = []
    for item in items:
        destination = posixpath.normpath(item.destination)
        if (
            report.status is TaskStatus.SUCCEEDED
            or destination in arrived
            or (item.recursive and destination in under)
        ):
            verdicts.append(ItemResult(item, done=True))
        elif report.status.final:  # the item's own fault if the mover gave one
            fault = faults.get(destination) or report.fault or "not among the files moved"
            verdicts.append(ItemResult(item, done=False, fault=fault))
    return tuple(verdicts)
