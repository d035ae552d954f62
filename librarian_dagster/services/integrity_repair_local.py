"""Repairing a corrupt copy from a good copy in another store of this librarian.

A librarian with two stores (a main array and a backup disk, say) holds two copies of a
book: when one goes bad, the other is the nearest good copy. Asking a peer first would
move the book across the network for nothing, and declaring it ``lost`` because no peer
holds it would be wrong. So ``request_repairs`` calls ``repair_locally`` before it asks any
peer:

- sources are the book's copies in service in other stores here: not a sneaker drive (its
  copy is on its way to another site), not a store whose burst guard is up, and only
  stores this process has open;
- the source is copied into the damaged store's staging while it is hashed
  (``copy_and_hash``, synced to disk); a source whose checksum is not the catalogue's is
  recorded as a corrupt copy at once (out of service, its own record and event), and the
  staged copy is dropped from the page cache and read once more from the disk before it
  is trusted: a repair must not trust a write it has not read back;
- only then is the bad copy set aside (``storage.quarantine``), the good one renamed into
  its place and the record closed as repaired (``corrupt.repair_recorded``); the
  set-aside copy is removed after that commit. A failed rename puts the bad copy back.

A source that could not be read (an unmounted disk, an I/O error, no room to stage) is a
passing problem: the record is asked about again later, never settled ``lost`` for it.

A crash after the rename and before the commit leaves a good copy in place and the record
open: the next pass re-reads known-bad copies first, finds it good and closes the record;
the set-aside copy is reported by ``clean_staging``. Nothing is ever lost on the way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from sqlalchemy import select

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import CorruptFile, File, Instance, Store
from librarian_dagster.services.corrupt import OPEN_FOR_REPAIR, repair_recorded
from librarian_dagster.services.integrity import VerifyReport, record_read
from librarian_dagster.services.integrity_guard import guarded_stores
from librarian_dagster.services.integrity_slice import Candidate
from librarian_dagster.states import CorruptionReason, StoreKind
from librarian_dagster.storage.checksums import Checksum, ChecksumError, hash_path
from librarian_dagster.storage.errors import StoreError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.copy import copy_and_hash
from librarian_dagster.storage.quarantine import put_back, remove_set_aside, set_aside
from librarian_dagster.storage.tree import drop_cached

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Book:
    record_id: int
    file_id: int
    name: str
    checksum: Checksum
    size: int
    is_directory: bool
    store: str
    store_id: int
    # (store name, instance id) of each copy that may serve
    sources: list[tuple[str, int]]


def _book(catalogue: Catalogue, record_id: int, stores: dict[str, LocalStore]) -> _Book | None:
    """The damaged copy's book and the stores here that may hold a good copy of it."""
    with catalogue.session() as session:
        record = session.get(CorruptFile, record_id)
        if record is None or record.status not in OPEN_FOR_REPAIR:
            return None
        file, store = record.file, record.store
        guarded = guarded_stores(session)
        sources = [
            (name, instance_id)
            for name, instance_id in session.execute(
                select(Store.name, Instance.id)
                .join(Instance, Instance.store_id == Store.id)
                .where(
                    Instance.file_id == file.id,
                    Instance.available.is_(True),
                    Store.id != store.id,
                    Store.kind != StoreKind.SNEAKER,
                )
                .order_by(Instance.verified_at.desc().nulls_last(), Store.name)
            )
            if name in stores and name not in guarded
        ]
        return _Book(
            record.id,
            file.id,
            file.name,
            Checksum.parse(file.checksum),
            file.size,
            file.is_directory,
            store.name,
            store.id,
            sources,
        )


@dataclass
class LocalRepair:
    source: str | None = None  # the store the good copy came from
    problems: list[str] = field(default_factory=list)  # why each source tried was not used
    # Every source tried gave a definite answer (its copy is bad): False after a passing
    # problem (unreadable now, no room), which must not count towards ``lost``.
    settled: bool = True


def repair_locally(
    catalogue: Catalogue, stores: dict[str, LocalStore], record_id: int
) -> LocalRepair:
    """Replace the bad copy of an open record with a good copy from another store here."""
    outcome = LocalRepair()
    book = _book(catalogue, record_id, stores)
    if book is None or book.store not in stores or not book.sources:
        return outcome
    damaged = stores[book.store]
    for source, instance_id in book.sources:
        try:
            found = _copy_from(catalogue, damaged, stores[source], book)
        except ChecksumError as error:  # something unsafe inside that copy: it is bad
            _record_bad_source(catalogue, book, source, instance_id, None, str(error))
            outcome.problems.append(f"store {source}: its copy cannot be read as a book")
            continue
        except (OSError, StoreError) as error:
            outcome.settled = False
            outcome.problems.append(f"store {source}: {getattr(error, 'strerror', None) or error}")
            continue
        if found is None:
            outcome.source = source
            return outcome
        _record_bad_source(catalogue, book, source, instance_id, found, "")
        outcome.problems.append(f"store {source}: its copy does not verify")
    return outcome


def _record_bad_source(
    catalogue: Catalogue,
    book: _Book,
    source: str,
    instance_id: int,
    found: Checksum | None,
    detail: str,
) -> None:
    """A source found bad is recorded as the integrity pass would: out of service, with
    its own record and event (and repaired in its turn)."""
    candidate = Candidate(instance_id, book.name, str(book.checksum), source, book.size, None)
    reason = CorruptionReason.MISMATCH if found is not None else CorruptionReason.UNREADABLE
    detail = detail or f"expected {book.checksum}, found {found} (read for a repair)"
    record_read(catalogue, candidate, found, reason, detail, VerifyReport())


def _copy_from(
    catalogue: Catalogue, damaged: LocalStore, source: LocalStore, book: _Book
) -> Checksum | None:
    """Stage, verify and put in place one source's copy: None, or the checksum it had."""
    staged = damaged.stage(book.name, book.size)
    try:
        algorithm = book.checksum.algorithm
        found = copy_and_hash(source.path_for(book.name), staged.data_path, algorithm)
        if found != book.checksum:
            return found
        drop_cached(staged.data_path)  # synced: read back from the disk, not from memory
        written = hash_path(staged.data_path, algorithm)
        if written != book.checksum:
            raise OSError(f"the copy written to store {damaged.name} reads back as {written}")
        holder = set_aside(damaged, book.name, book.is_directory)
        try:
            path = damaged.commit(staged, book.name)
        except BaseException:
            if holder is not None:  # the bad copy goes back where it was, out of service
                put_back(damaged, book.name, holder)
            raise
        with catalogue.session() as session:
            file = session.get(File, book.file_id)
            closed = 0
            if file is not None:
                by = f"copied from store {source.name}"
                closed = repair_recorded(session, file, book.store_id, str(path), by=by)
        if holder is not None and closed:
            remove_set_aside(holder)
        log.info("repaired %s in store %s from store %s", book.name, book.store, source.name)
        return None
    finally:
        if os.path.isdir(staged.directory):  # not committed: nobody may trust it
            damaged.discard_staging(staged.staging_id)
