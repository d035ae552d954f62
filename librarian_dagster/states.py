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


class CorruptionStatus(enum.StrEnum):
    DETECTED = "detected"
    REFETCHING = "refetching"
    REPAIRED = "repaired"
    LOST = "lost"
