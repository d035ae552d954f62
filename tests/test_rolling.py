"""A rolling store deletes only books that a live peer verified at that moment.

site-a's ``main`` store is rolling (``keep_days = 0``: every book is past the limit); its
books are cloned to site-b (``tests.clone_helpers``: real catalogues, stores, API). Then
site-a's cleanup asks site-b to validate each book before deleting it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import File, Instance, RemoteInstance
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import ROLLING_JOB
from librarian_dagster.services.integrity_guard import trip
from librarian_dagster.services.integrity_rolling import clean_store, finish_deletions
from tests.clone_helpers import (
    CloneSite,
    befriend_both,
    clone_sites,
    links_for,
    postgres_schemas,
    pump,
)
from tests.test_clones import upload
from tests.test_validate import rot

ROLLING = "rolling = { keep_days = 0, min_copies_elsewhere = %d }"


def rolling_pair(
    tmp_path: Path, database: str, copies: int, both: bool = False
) -> Iterator[dict[str, CloneSite]]:
    extra = {"site-a": ROLLING % copies}
    if both:
        extra["site-b"] = ROLLING % copies
    if database == "sqlite":
        with clone_sites(tmp_path, ["site-a", "site-b"], extra_toml=extra) as sites:
            befriend_both(sites["site-a"], sites["site-b"])
            yield sites
        return
    with (
        postgres_schemas(2) as urls,
        clone_sites(tmp_path, ["site-a", "site-b"], urls, extra_toml=extra) as sites,
    ):
        befriend_both(sites["site-a"], sites["site-b"])
        yield sites


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, CloneSite]]:
    yield from rolling_pair(tmp_path, request.param, 1)


def instances(site: CloneSite) -> dict[str, Instance]:
    with site.catalogue.session() as session:
        rows = session.scalars(select(Instance).join(File)).all()
        found = {row.file.name: row for row in rows}
        session.expunge_all()
        return found


def test_only_books_a_live_peer_verified_just_now_are_deleted(
    pair: dict[str, CloneSite], tmp_path: Path
) -> None:
    a, b = pair["site-a"], pair["site-b"]
    names = upload(a, tmp_path, 4)
    pump(pair)
    rot(b, names[1])  # b's copy of this one is corrupt (b does not know yet)

    report = clean_store(a.catalogue, a.settings, a.stores, links_for(pair), "main")
    assert sorted(report.deleted) == sorted([names[0], names[2], names[3]])
    ((kept, why),) = report.kept
    assert kept == names[1] and "does not verify" in why and "site-b" in why
    rows = instances(a)
    for name in report.deleted:
        assert not a.store.exists(name)
        row = rows[name]
        assert not row.available and row.deleted_at is not None
        assert "verified just now at site-b" in (row.deleted_reason or "")
    assert rows[names[1]].available and a.store.exists(names[1])
    with a.catalogue.session() as session:  # File rows and remote instances stay
        assert len(session.scalars(select(File)).all()) == 4
        assert len(session.scalars(select(RemoteInstance)).all()) == 4

    # A second run: nothing new to delete; the kept book is still kept.
    again = clean_store(a.catalogue, a.settings, a.stores, links_for(pair), "main")
    assert again.deleted == [] and [name for name, _ in again.kept] == [names[1]]


def test_a_book_whose_peer_is_down_is_kept(pair: dict[str, CloneSite], tmp_path: Path) -> None:
    a = pair["site-a"]
    (name,) = upload(a, tmp_path, 1)
    pump(pair)
    down = links_for(pair, down=frozenset({"site-b"}))
    report = clean_store(a.catalogue, a.settings, a.stores, down, "main")
    assert report.deleted == []
    ((kept, why),) = report.kept
    assert kept == name and "unreachable" in why
    assert a.store.exists(name) and instances(a)[name].available


def test_books_kept_wait_their_turn_and_the_walk_comes_round(tmp_path: Path) -> None:
    """One book per run, the peer down: each run looks at the next book, not the first
    one again; at the end it starts over, and once the peer is back all go."""
    extra = {
        "site-a": "rolling = { keep_days = 0, min_copies_elsewhere = 1, max_books_per_run = 1 }"
    }
    with clone_sites(tmp_path, ["site-a", "site-b"], extra_toml=extra) as pair:
        befriend_both(pair["site-a"], pair["site-b"])
        a = pair["site-a"]
        names = upload(a, tmp_path, 3)
        pump(pair)
        down = links_for(pair, down=frozenset({"site-b"}))
        looked = [
            [name for name, _ in clean_store(a.catalogue, a.settings, a.stores, down, "main").kept]
            for _ in range(4)
        ]
        assert looked == [names[:1], names[1:2], names[2:3], names[:1]]
        deleted = [
            clean_store(a.catalogue, a.settings, a.stores, links_for(pair), "main").deleted
            for _ in range(3)
        ]
        assert sorted(name for run in deleted for name in run) == sorted(names)


def test_a_guarded_store_deletes_nothing(pair: dict[str, CloneSite], tmp_path: Path) -> None:
    a = pair["site-a"]
    (name,) = upload(a, tmp_path, 1)
    pump(pair)
    with a.catalogue.session() as session:
        trip(session, "main", "test")
    report = clean_store(a.catalogue, a.settings, a.stores, links_for(pair), "main")
    assert report.skipped and report.deleted == [] and a.store.exists(name)


def test_two_copies_required_with_one_peer_keeps_everything(tmp_path: Path) -> None:
    for sites in rolling_pair(tmp_path, "sqlite", 2):
        a = sites["site-a"]
        names = upload(a, tmp_path, 3)
        pump(sites)
        report = clean_store(a.catalogue, a.settings, a.stores, links_for(sites), "main")
        assert report.deleted == [] and len(report.kept) == 3
        assert all("too few copies elsewhere (1 of 2" in why for _, why in report.kept)
        assert all(a.store.exists(name) for name in names)


def test_a_deletion_interrupted_after_its_commit_is_finished_next_time(
    pair: dict[str, CloneSite], tmp_path: Path
) -> None:
    a = pair["site-a"]
    (name,) = upload(a, tmp_path, 1)
    pump(pair)
    with a.catalogue.session() as session:  # what a run killed before the unlink leaves
        row = session.scalars(select(Instance)).one()
        row.available = False
        row.deleted_at = row.created_at
        row.deleted_reason = "test"
        store_id = row.store_id
    assert a.store.exists(name)
    with a.catalogue.session() as session:
        assert finish_deletions(session, a.store, store_id) == 1
    assert not a.store.exists(name)


def test_the_rolling_cleanup_job_runs_the_same_cleanup(
    pair: dict[str, CloneSite], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from librarian_dagster.resources import librarian_resources
    from librarian_dagster.resources.peers import PeersResource

    a = pair["site-a"]
    names = upload(a, tmp_path, 2)
    pump(pair)
    monkeypatch.setattr(PeersResource, "links", lambda self: links_for(pair))
    defs = build_definitions()
    job = dg.Definitions(
        jobs=defs.jobs, resources=librarian_resources(str(a.settings.config_file))
    ).resolve_job_def(ROLLING_JOB)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert not any(a.store.exists(name) for name in names)


def test_a_byte_budget_selects_the_oldest_beyond_it_and_days_the_old_ones(
    pair: dict[str, CloneSite], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from librarian_dagster.catalogue.models import Store
    from librarian_dagster.services.integrity_rolling import candidates
    from librarian_dagster.settings import RollingSettings

    a = pair["site-a"]
    names = upload(a, tmp_path, 5)
    now = datetime.now(UTC)
    with a.catalogue.session() as session:
        store_id = session.scalars(select(Store.id).where(Store.name == "main")).one()
        sizes = {f.name: f.size for f in session.scalars(select(File))}
        newest_two = sizes[names[4]] + sizes[names[3]]
        budget = RollingSettings(keep_days=3650, max_bytes=newest_two)
        assert [c.name for c in candidates(session, store_id, budget, now).books] == names[:3]
        roomy = RollingSettings(keep_days=3650, max_bytes=sum(sizes.values()))
        assert candidates(session, store_id, roomy, now).books == []
        # By days: the two oldest made "old" (ids follow creation).
        for name in names[:2]:
            file = session.scalars(select(File).where(File.name == name)).one()
            file.created_at = now - timedelta(days=40)
        session.flush()
        by_days = RollingSettings(keep_days=30)
        assert [c.name for c in candidates(session, store_id, by_days, now).books] == names[:2]
        limited = RollingSettings(keep_days=30, max_books_per_run=1)
        first = candidates(session, store_id, limited, now)
        assert [c.name for c in first.books] == names[:1] and first.next_after
        second = candidates(session, store_id, limited, now, first.next_after)
        assert [c.name for c in second.books] == names[1:2]
        # Young books with old ids (a rebuilt catalogue) are passed over, never a stall.
        for name, age in zip(names[:4], (0, 0, 41, 40), strict=True):
            file = session.scalars(select(File).where(File.name == name)).one()
            file.created_at = now - timedelta(days=age)
        session.flush()
        after, seen = 0, []
        for _ in range(4):
            page = candidates(session, store_id, limited, now, after)
            seen.append([c.name for c in page.books])
            after = page.next_after
        assert seen == [[], [], names[2:3], names[3:4]]


def test_two_rolling_stores_never_count_each_others_copies(tmp_path: Path) -> None:
    for sites in rolling_pair(tmp_path, "sqlite", 1, both=True):
        a, b = sites["site-a"], sites["site-b"]
        names = upload(a, tmp_path, 2)
        pump(sites)
        for here in (a, b):
            report = clean_store(
                here.catalogue, here.settings, here.stores, links_for(sites), "main"
            )
            assert report.deleted == [] and len(report.kept) == 2
            assert all("on a rolling store too" in why for _, why in report.kept)
        assert all(a.store.exists(name) and b.store.exists(name) for name in names)
