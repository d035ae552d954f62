"""Re-verify stored copies against the checksum taken at ingest.

Called by the ``checksums_match`` asset check (and, later, the scheduled integrity job). A
good copy gets a fresh ``verified_at``; a corrupt one is recorded in ``corrupt_files``, taken
out of service (``available = False``) and reported in the event log; a missing one likewise.
Paths are re-derived from the store and the name, never taken from the row as given.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import CorruptFile, File, Instance
from librarian_dagster.services.events import record_event
from librarian_dagster.states import CorruptionStatus, Severity
from librarian_dagster.storage.checksums import Checksum, ChecksumError, hash_path
from librarian_dagster.storage.local_store import LocalStore


@dataclass
class VerifyReport:
    good: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"verified {len(self.good)} copies ({self.bytes_read} bytes) in {self.seconds:.2f} s",
            *(f"CORRUPT: {name}" for name in self.corrupt),
            *(f"MISSING: {name}" for name in self.missing),
        ]


def _candidates(
    catalogue: Catalogue, names: Sequence[str], limit: int
) -> list[tuple[int, str, str, str]]:
    """(instance id, file name, checksum, store name), least recently verified first."""
    with catalogue.session() as session:
        statement = (
            select(Instance)
            .join(File)
            .options(joinedload(Instance.file), joinedload(Instance.store))
            .where(Instance.available)
            .order_by(Instance.verified_at.is_not(None), Instance.verified_at, Instance.id)
            .limit(limit)
        )
        if names:
            statement = statement.where(File.name.in_(list(names)))
        rows = session.scalars(statement).all()
        return [(row.id, row.file.name, row.file.checksum, row.store.name) for row in rows]


def _read(path: Path, expected: Checksum) -> tuple[Checksum | str | None, str]:
    """The copy's checksum; None if it is gone; a string saying why it cannot be read."""
    try:
        return hash_path(path, expected.algorithm), ""
    except FileNotFoundError:
        return None, ""
    except ChecksumError as error:  # something unsafe appeared inside a stored book
        return "unreadable", str(error)


def verify_instances(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    *,
    names: Sequence[str] = (),
    limit: int = 20,
) -> VerifyReport:
    report = VerifyReport()
    started = time.monotonic()
    for instance_id, name, expected_text, store_name in _candidates(catalogue, names, limit):
        store = stores.get(store_name)
        if store is None:
            continue  # a store no longer configured: nothing to read it with
        path = store.path_for(name)
        expected = Checksum.parse(expected_text)
        found, detail = _read(path, expected)
        with catalogue.session() as session:
            instance = session.get(Instance, instance_id)
            if instance is None:
                continue
            if found == expected:
                instance.verified_at = datetime.now(UTC)
                report.good.append(name)
                report.bytes_read += instance.file.size
                continue
            instance.available = False
            if found is None:
                report.missing.append(name)
                record_event(
                    session, Severity.ERROR, "copy_missing", f"{path} is missing", subject=name
                )
                continue
            report.corrupt.append(name)
            session.add(
                CorruptFile(
                    file_id=instance.file_id,
                    instance_id=instance.id,
                    store_id=instance.store_id,
                    expected_checksum=str(expected),
                    actual_checksum=str(found) if isinstance(found, Checksum) else None,
                    status=CorruptionStatus.DETECTED,
                )
            )
            record_event(
                session,
                Severity.CRITICAL,
                "copy_corrupt",
                f"{path}: expected {expected}, found {detail or found}",
                subject=name,
            )
    report.seconds = time.monotonic() - started
    return report
