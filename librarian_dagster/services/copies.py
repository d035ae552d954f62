"""Where the copies of books are: ours and the peers' (remote instances: recorded here,
idempotently and a batch at a time; read for the UI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import File, Instance, Librarian, RemoteInstance, Store
from librarian_dagster.states import StoreKind

# Where a drive's copies were last seen: per store id, [created_at ISO, instance id].
SeenOnDrives = Mapping[str, list[str | int]]


@dataclass(frozen=True)
class RemoteCopy:
    id: int
    file_id: int
    name: str
    peer: str
    store: str


def remote_instances_since(
    session: Session, after_id: int, *, before: datetime, limit: int
) -> list[RemoteCopy]:
    """Remote instances with an id above ``after_id`` recorded before ``before``, by id."""
    rows = session.execute(
        select(
            RemoteInstance.id,
            RemoteInstance.file_id,
            File.name,
            Librarian.name.label("peer"),
            RemoteInstance.store_name,
        )
        .join(File, File.id == RemoteInstance.file_id)
        .join(Librarian, Librarian.id == RemoteInstance.librarian_id)
        .where(RemoteInstance.id > after_id, RemoteInstance.created_at < before)
        .order_by(RemoteInstance.id)
        .limit(limit)
    ).all()
    return [RemoteCopy(r.id, r.file_id, r.name, r.peer, r.store_name) for r in rows]


def drive_copies_since(
    session: Session, seen: SeenOnDrives, *, limit: int
) -> tuple[list[int], dict[str, list[str | int]]]:
    """File ids of copies recorded on drives after ``seen`` (at most ``limit``), and the new
    ``seen``. Ordered by time of recording, then id: a fill records one book at a time, and
    SQLite may give a wiped drive's ids to new rows. Each drive holds a few thousand copies,
    read through the (store_id, file_id) index."""
    found: list[int] = []
    after: dict[str, list[str | int]] = dict(seen)
    drives = session.scalars(
        select(Store.id).where(Store.kind == StoreKind.SNEAKER).order_by(Store.id)
    ).all()
    for store_id in drives:
        if len(found) >= limit:
            break
        query = select(Instance.file_id, Instance.created_at, Instance.id).where(
            Instance.store_id == store_id
        )
        mark = seen.get(str(store_id))
        if mark is not None:
            when, last_id = datetime.fromisoformat(str(mark[0])), int(mark[1])
            query = query.where(
                or_(
                    Instance.created_at > when,
                    and_(Instance.created_at == when, Instance.id > last_id),
                )
            )
        rows = session.execute(
            query.order_by(Instance.created_at, Instance.id).limit(limit - len(found))
        ).all()
        for file_id, created_at, instance_id in rows:
            found.append(file_id)
            after[str(store_id)] = [created_at.isoformat(), instance_id]
    return found, after


def copies_of(session: Session, file_ids: Sequence[int]) -> dict[int, tuple[str, list[str]]]:
    """Per file id: its name and where its copies are (``here: <store>``, ``<peer>: <store>``)."""
    if not file_ids:
        return {}
    names = dict(
        session.execute(select(File.id, File.name).where(File.id.in_(file_ids))).tuples().all()
    )
    where: dict[int, list[str]] = {file_id: [] for file_id in names}
    for file_id, store, available in session.execute(
        select(Instance.file_id, Store.name, Instance.available)
        .join(Store, Store.id == Instance.store_id)
        .where(Instance.file_id.in_(file_ids))
        .order_by(Instance.id)
    ):
        where[file_id].append(f"here: {store}" + ("" if available else " (unavailable)"))
    for file_id, peer, store in session.execute(
        select(RemoteInstance.file_id, Librarian.name, RemoteInstance.store_name)
        .join(Librarian, Librarian.id == RemoteInstance.librarian_id)
        .where(RemoteInstance.file_id.in_(file_ids))
        .order_by(RemoteInstance.id)
    ):
        where[file_id].append(f"{peer}: {store}")
    return {file_id: (names[file_id], where[file_id]) for file_id in names}


def record_remote_instance(
    session: Session,
    file_id: int,
    librarian_id: int,
    store_name: str,
    *,
    verified: bool = False,
) -> bool:
    """A peer holds ``file_id`` in ``store_name``; True if this is news (idempotent)."""
    news = record_remote_instances(session, librarian_id, [(file_id, store_name)], verified)
    return bool(news)


def record_remote_instances(
    session: Session,
    librarian_id: int,
    copies: Sequence[tuple[int, str]],
    verified: bool = False,
) -> set[tuple[int, str]]:
    """The peer holds these (file id, store name) copies; the ones that are news (a few
    queries for a whole batch, idempotent).

    ``verified``: the peer says it verified them just now (it stored our bytes after
    checking their checksum, or holds books with our checksum).
    """
    wanted = set(copies)
    if not wanted:
        return set()
    known = {
        (file_id, store): remote_id
        for remote_id, file_id, store in session.execute(
            select(RemoteInstance.id, RemoteInstance.file_id, RemoteInstance.store_name).where(
                RemoteInstance.librarian_id == librarian_id,
                RemoteInstance.file_id.in_({file_id for file_id, _ in wanted}),
            )
        )
    }
    now = datetime.now(UTC)
    if verified and known:
        session.execute(
            update(RemoteInstance)
            .where(RemoteInstance.id.in_([known[c] for c in wanted if c in known]))
            .values(verified_at=now)
        )
    news = sorted(wanted - set(known))
    if news:
        session.execute(
            insert(RemoteInstance),
            [
                {
                    "file_id": file_id,
                    "librarian_id": librarian_id,
                    "store_name": store,
                    "created_at": now,
                    "verified_at": now if verified else None,
                }
                for file_id, store in news
            ],
        )
    return set(news)
