"""A rolling store keeps only recent books: the oldest go once enough good copies exist
elsewhere, confirmed at that moment.

``rolling_cleanup`` runs look, per rolling store whose burst guard is down, at copies in
service older than ``keep_days`` (oldest first, ``max_books_per_run``), then, while the
store holds more than ``max_bytes``, at the oldest of the rest. Each run goes on where the
last one stopped (``stores.rolling_after_file_id``) and starts over at the end, so books
kept are looked at again once per round, not every hour ahead of all the others. For each
book, every peer holding a remote instance of it is asked to re-read its copy now
(``POST /files/{name}/validate``); the copy here is deleted only when at least
``min_copies_elsewhere`` distinct peers answered that theirs matches, on a store that is
not rolling itself (two rolling stores would otherwise each count the other's copy and
both delete theirs). Otherwise the book is
kept and the report says why: too few copies elsewhere, a peer unreachable, a peer's copy
corrupt. A remote instance is never taken on trust: that is how a rolling deletion once
went ahead although the downstream copy had failed its checksum.

Deleting is two steps, in this order: the catalogue first (the instance out of service,
``deleted_at`` and ``deleted_reason`` set; the File row and remote instances stay), then
the bytes. A crash in between leaves bytes that nothing serves, and the next run removes
them (``finish_deletions``); the reverse order would leave a copy "in service" that is
gone, which the integrity pass would take for a missing copy and re-fetch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, true, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, Instance, Librarian, Store
from librarian_dagster.services.integrity_guard import guarded_stores
from librarian_dagster.services.integrity_validate import ask_peer, holders
from librarian_dagster.services.peers import PeerLinks
from librarian_dagster.settings import LibrarianSettings, RollingSettings
from librarian_dagster.storage import posix
from librarian_dagster.storage.errors import NameConflictError
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.sidecars import remove_sidecar

LEFTOVERS_PER_RUN = 1000
BUDGET_PAGE = 5000


@dataclass(frozen=True)
class _Old:
    instance_id: int
    name: str
    checksum: str
    size: int


@dataclass
class RollingReport:
    store: str
    deleted: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    # (book, why it was kept)
    kept: list[tuple[str, str]] = field(default_factory=list)
    skipped: str = ""  # why the whole store was left alone

    def summary(self) -> str:
        if self.skipped:
            return f"store {self.store}: left alone ({self.skipped})"
        return (
            f"store {self.store}: deleted {len(self.deleted)} books "
            f"({self.deleted_bytes} bytes), kept {len(self.kept)}"
        )


@dataclass(frozen=True)
class Selection:
    books: list[_Old]
    # Where the next run looks after: the last file id this page looked at, or 0 when the
    # page reached the end of what is past the limit (the next run starts over).
    next_after: int


def candidates(
    session: Session, store_id: int, policy: RollingSettings, now: datetime, after: int = 0
) -> Selection:
    """Copies in service here past the limit, oldest first, after file id ``after`` (one
    page of at most ``max_books_per_run`` copies looked at).

    Oldest is by file id, the order books were catalogued here: each bound below is one
    look-up, and the copies are one range of ``(store_id, available, file_id)``, which skips
    the copies already deleted. Past ``keep_days``: up to the newest file created before
    the cut-off (``files.created_at`` index, backwards, one row). Over ``max_bytes``: the
    copies older than the newest ones that fit the budget, found walking newest first
    (as many rows as the budget holds books, not the whole store). The caller keeps
    ``after`` (``stores.rolling_after_file_id``) so that successive runs walk the whole
    range: books kept stay behind the cursor until the walk comes round again.
    """
    cutoff = now - timedelta(days=policy.keep_days)
    by_days = session.scalar(
        select(File.id).where(File.created_at < cutoff).order_by(File.created_at.desc()).limit(1)
    )
    by_bytes = _beyond_budget(session, store_id, policy.max_bytes) if policy.max_bytes else None
    bound = max(by_days or 0, by_bytes or 0)
    if not bound:
        return Selection([], 0)
    rows = session.execute(
        select(Instance.id, File.name, File.checksum, File.size, File.created_at, File.id)
        .join(File, Instance.file_id == File.id)
        .where(
            Instance.store_id == store_id,
            Instance.available == true(),
            Instance.file_id > after,
            Instance.file_id <= bound,
        )
        .order_by(Instance.file_id)
        .limit(policy.max_books_per_run)
    ).all()
    # Ids follow creation here; a rebuilt catalogue's may not: the cut-off itself decides.
    books = [
        _Old(instance_id, name, checksum, size)
        for instance_id, name, checksum, size, created, file_id in rows
        if created < cutoff or (by_bytes is not None and file_id <= by_bytes)
    ]
    full = len(rows) == policy.max_books_per_run
    return Selection(books, int(rows[-1][-1]) if full else 0)


def _beyond_budget(session: Session, store_id: int, budget: int) -> int | None:
    """The newest file id whose copy no longer fits ``budget`` bytes (the newest copies
    counted first), or None if everything fits."""
    held, before = 0, None
    while True:
        statement = (
            select(Instance.file_id, File.size)
            .join(File, Instance.file_id == File.id)
            .where(Instance.store_id == store_id, Instance.available == true())
            .order_by(Instance.file_id.desc())
            .limit(BUDGET_PAGE)
        )
        if before is not None:
            statement = statement.where(Instance.file_id < before)
        rows = session.execute(statement).all()
        for file_id, size in rows:
            held += size
            if held > budget:
                return int(file_id)
        if len(rows) < BUDGET_PAGE:
            return None
        before = rows[-1][0]


def _why_kept(
    settings: LibrarianSettings,
    links: PeerLinks,
    peers: Sequence[Librarian],
    item: _Old,
    needed: int,
) -> tuple[str | None, list[str]]:
    """(why the book must stay, or None; the peers whose copy verified just now)."""
    if len(peers) < needed:
        return f"too few copies elsewhere ({len(peers)} of {needed} peers hold it)", []
    good, problems = [], []
    for peer in peers:
        answer = ask_peer(settings, links, peer, item.name, item.checksum)
        if answer.durable_copies:
            good.append(peer.name)
        elif answer.verified_copies:
            problems.append(f"{peer.name}'s copy verifies but is on a rolling store too")
        elif answer.answer is None:
            problems.append(f"{peer.name} {answer.problem}")
        else:
            found = "; ".join(copy.problem or "no match" for copy in answer.answer.copies)
            problems.append(f"{peer.name}'s copy does not verify ({found or 'no copy'})")
    if len(good) < needed:
        return f"{len(good)} of {needed} verified copies elsewhere: {'; '.join(problems)}", good
    return None, good


def _delete(
    catalogue: Catalogue, store: LocalStore, item: _Old, reason: str, report: RollingReport
) -> None:
    with catalogue.session() as session:
        if guarded_stores(session, [store.name]):  # a pass may have guarded it meanwhile
            report.kept.append((item.name, "the store's burst guard went up"))
            return
        instance = session.get(Instance, item.instance_id, with_for_update=True)
        if instance is None or not instance.available:
            return  # taken out of service meanwhile (found bad, say): not ours to delete
        instance.available = False
        instance.deleted_at = datetime.now(UTC)
        instance.deleted_reason = reason[:4000]
    _remove_bytes(store, item.name)
    report.deleted.append(item.name)
    report.deleted_bytes += item.size


def _remove_bytes(store: LocalStore, name: str) -> None:
    """The bytes of a copy the catalogue records deleted. A directory book that a killed
    run had begun to remove is writable by now, which ``LocalStore.delete`` would take for
    a namespace: the catalogue says it is a book, so it is removed as one."""
    try:
        store.delete(name)
    except FileNotFoundError:
        return  # a previous run got this far
    except NameConflictError:
        posix.remove_tree(store.path_for(name))
        remove_sidecar(store, name)


def finish_deletions(session: Session, store: LocalStore, store_id: int) -> int:
    """Bytes of copies recorded deleted but still on disk (a run died in between)."""
    names = session.scalars(
        select(File.name)
        .join(Instance, Instance.file_id == File.id)
        .where(
            Instance.store_id == store_id,
            Instance.deleted_at.is_not(None),
            Instance.available.is_(False),
        )
        .order_by(Instance.deleted_at.desc())
        .limit(LEFTOVERS_PER_RUN)
    ).all()
    removed = 0
    for name in names:
        if store.exists(name):
            _remove_bytes(store, name)
            removed += 1
    return removed


def clean_store(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    stores: dict[str, LocalStore],
    links: PeerLinks,
    store_name: str,
    now: datetime | None = None,
) -> RollingReport:
    """One rolling store's cleanup (see the module)."""
    now = now or datetime.now(UTC)
    report = RollingReport(store_name)
    policy = settings.store(store_name).rolling
    if policy is None:
        report.skipped = "not a rolling store"
        return report
    store = stores[store_name]
    with catalogue.session() as session:
        if guarded_stores(session, [store_name]):
            report.skipped = "its burst guard is up (librarian events list --kind burst_guard)"
            return report
        store_id = session.scalar(select(Store.id).where(Store.name == store_name))
        if store_id is None:
            report.skipped = "not in the catalogue yet"
            return report
        finish_deletions(session, store, store_id)
        after = session.scalar(select(Store.rolling_after_file_id).where(Store.id == store_id)) or 0
        selection = candidates(session, store_id, policy, now, after)
        if after and not selection.books and not selection.next_after:
            selection = candidates(session, store_id, policy, now)  # came round: start over
        old = selection.books
        held_by = {item.instance_id: holders(session, item.name) for item in old}
        session.expunge_all()
    for item in old:
        why, good = _why_kept(
            settings, links, held_by[item.instance_id], item, policy.min_copies_elsewhere
        )
        if why is not None:
            report.kept.append((item.name, why))
            continue
        reason = f"rolling store: past its limit; verified just now at {', '.join(good)}"
        _delete(catalogue, store, item, reason, report)
    with catalogue.session() as session:  # after the work: a crash looks at the page again
        session.execute(
            update(Store)
            .where(Store.id == store_id)
            .values(rolling_after_file_id=selection.next_after)
        )
    return report


def rolling_stores(settings: LibrarianSettings) -> list[str]:
    return [store.name for store in settings.stores if store.rolling is not None]
