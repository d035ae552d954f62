"""The states and kinds that the catalogue stores and the wire carries.

One definition for both sides: the ORM models (``catalogue/``) store these as short strings,
the wire models (``wire/``) and the client send and compare them. Importing this module loads
nothing but the standard library, so the client can use it without SQLAlchemy.
"""

from __future__ import annotations

import enum


class UserLevel(enum.StrEnum):
    """Permission levels, lowest first; comparisons go through ``rank``."""

    CALLBACK = "callback"
    READ_ONLY = "read_only"
    READ_APPEND = "read_append"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(UserLevel).index(self)

    def allows(self, required: UserLevel) -> bool:
        return self.rank >= required.rank


class StoreKind(enum.StrEnum):
    LOCAL = "local"
    SNEAKER = "sneaker"


class DriveState(enum.StrEnum):
    """Where a sneaker store's drive is in its round trip (local stores have none).

    ``filling`` (books are copied onto it) → ``full`` (the next book did not fit) →
    ``in_transit`` (its manifest is written; no more fills) → ``returned`` (back, waiting
    for the destination's callbacks) → wiped → ``filling`` again.
    """

    FILLING = "filling"
    FULL = "full"
    IN_TRANSIT = "in_transit"
    RETURNED = "returned"


class TransferStatus(enum.StrEnum):
    """Life of an incoming or outgoing transfer; ``stored``/``failed``/``cancelled`` are final."""

    INITIATED = "initiated"  # staging directory made, bytes not yet there
    STAGED = "staged"  # bytes are in staging, waiting for verification
    VERIFYING = "verifying"  # a run is verifying and moving it into the store
    ONGOING = "ongoing"  # (outgoing) bytes are moving
    STORED = "stored"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({TransferStatus.STORED, TransferStatus.FAILED, TransferStatus.CANCELLED})
PENDING_STATUSES = (TransferStatus.INITIATED, TransferStatus.STAGED, TransferStatus.VERIFYING)
# An outgoing transfer (one book on its way to a peer) is ``initiated`` while it waits for a
# batch or for the peer's answer to stage, ``ongoing`` while the mover carries it, ``staged``
# once its bytes are in the peer's staging and the peer was told, and ``stored`` when the
# peer says it verified and stored them. At most one pending transfer per book and peer.
OUTGOING_PENDING = (TransferStatus.INITIATED, TransferStatus.ONGOING, TransferStatus.STAGED)


class BatchStatus(enum.StrEnum):
    """Life of a clone batch: one mover task carrying many books to one peer."""

    INITIATED = "initiated"  # formed by the clone sensor; the peer not asked to stage yet
    STAGED = "staged"  # the peer staged its books; waiting for a free mover slot
    SUBMITTING = "submitting"  # submission id recorded; the mover may or may not have it
    ONGOING = "ongoing"  # the mover has the task
    SUCCEEDED = "succeeded"  # the mover moved every book it still had to
    FAILED = "failed"  # the mover gave up on some books (each has its own outcome)
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (BatchStatus.SUCCEEDED, BatchStatus.FAILED, BatchStatus.CANCELLED)


# Batches that hold (or may hold) a task at their mover: they count against
# ``[transfer] max_active_transfers``.
MOVER_BUSY = (BatchStatus.SUBMITTING, BatchStatus.ONGOING)
BATCH_OPEN = (
    BatchStatus.INITIATED,
    BatchStatus.STAGED,
    BatchStatus.SUBMITTING,
    BatchStatus.ONGOING,
)


class MoverName(enum.StrEnum):
    """The byte movers a peer can be reached by (SPEC §5: ``mover`` of ``POST /peers``)."""

    LOCAL = "local"  # copies on this host: same-host peers, tests
    GLOBUS = "globus"


class StageAnswer(enum.StrEnum):
    """A peer's answer to "stage this book" (``POST /clones/stage``), per book."""

    STAGED = "staged"  # a staging directory is ready for its bytes
    HELD = "held"  # the peer holds a verified copy with the same checksum: nothing to send
    IN_PROGRESS = "in_progress"  # the peer is already receiving or verifying it from us
    CONFLICT = "conflict"  # the peer holds another book under that name: never overwritten
    REFUSED = "refused"  # the peer cannot take it (its name rules, say); ``reason`` says why


class TransferKind(enum.StrEnum):
    UPLOAD = "upload"
    CLONE = "clone"
    SNEAKER = "sneaker"
    INBOX = "inbox"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def at_least(self) -> list[Severity]:
        """This severity and every graver one (``events list --severity error``)."""
        return [severity for severity in Severity if severity.rank >= self.rank]


class CorruptionStatus(enum.StrEnum):
    """Life of a corrupt-copy record; only ``repaired`` and ``dismissed`` end it."""

    DETECTED = "detected"  # a check found the copy bad; it is out of service
    REFETCHING = "refetching"  # a good copy is on its way from a peer
    LOST = "lost"  # no good copy to repair it from: an operator must act
    REPAIRED = "repaired"  # the copy verifies again (re-read, or replaced by a good one)
    DISMISSED = "dismissed"  # an operator closed it by hand, with a note saying why


# Records in these states keep the integrity check failed and /ping unhealthy.
UNRESOLVED_CORRUPTION = (
    CorruptionStatus.DETECTED,
    CorruptionStatus.REFETCHING,
    CorruptionStatus.LOST,
)


class CorruptionReason(enum.StrEnum):
    """What was wrong with the copy when it was found bad."""

    MISMATCH = "mismatch"  # its bytes hash to another checksum
    MISSING = "missing"  # nothing at its path
    UNREADABLE = "unreadable"  # it cannot be hashed (e.g. a symlink appeared inside the book)

    @property
    def label(self) -> str:
        """The word a person reads: "corrupt" for a mismatch, else the reason itself."""
        return "corrupt" if self is CorruptionReason.MISMATCH else self.value
