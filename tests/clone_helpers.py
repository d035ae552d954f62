"""Two (or three) librarians in one process for clone tests: real catalogues, stores, API.

Each ``CloneSite`` has its own directory, config, catalogue (SQLite or a PostgreSQL schema
of its own), stores and Litestar app. Peers call each other through the real API routes and
auth (``HttpPeerLink`` over each site's ``TestClient``), and books move with the real
``LocalMover``; only Dagster is left out: ``pump`` does what the sensors and runs would, by
calling the same services, until nothing is left to do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from litestar.testing import TestClient
from sqlalchemy import select

from librarian_dagster.api.app import create_app
from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.catalogue.models import IncomingTransfer, Librarian, TransferBatch
from librarian_dagster.peer_links import HttpPeerLink
from librarian_dagster.services import accounts, clones, clones_run, outbox_delivery, peers
from librarian_dagster.services.bootstrap import ensure_secret_key, prepare
from librarian_dagster.services.clones_batch import BatchDeferred, BatchOutcome
from librarian_dagster.services.errors import PeerCallFailed
from librarian_dagster.services.ingest import ingest_transfer
from librarian_dagster.services.movers import build_movers
from librarian_dagster.services.peers import PeerAccess, PeerLink, PeerLinks
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings, load_settings
from librarian_dagster.states import BATCH_OPEN, TransferKind, TransferStatus, UserLevel
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.storage.movers.local import LocalMover
from librarian_dagster.wire import PeerCreate
from tests.conftest import FAST_ARGON2

TRANSFER_DEFAULTS = {
    "batch_min": 1,
    "batch_max": 64,
    "batch_max_wait_seconds": 0,
    "retry_backoff_seconds": 0,
    "retry_backoff_max_seconds": 0,
    "callback_backoff_seconds": 0.01,
    "callback_backoff_max_seconds": 0.01,
    "poll_interval_seconds": 0,
    "catalogue_lag_seconds": 0,
    "settle_wait_seconds": 0,  # each step on its own (test_clones_units tests the wait)
}
PEER_PASSWORD = "peer-password-1"


@dataclass
class CloneSite:
    name: str
    settings: LibrarianSettings
    catalogue: Catalogue
    stores: dict[str, LocalStore]
    client: TestClient
    url: str
    outcomes: list[BatchOutcome] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)

    @property
    def store(self) -> LocalStore:
        return self.stores["main"]

    @property
    def mover(self) -> LocalMover:
        movers = build_movers(self.settings)
        mover = movers["local"]
        assert isinstance(mover, LocalMover)
        return mover

    def peer_id(self, name: str) -> int:
        with self.catalogue.session() as session:
            return peers.get_peer(session, name).id


def site_config(
    directory: Path,
    name: str,
    database_url: str,
    transfer: dict[str, object],
    extra_toml: str = "",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    sqlite = directory / "catalogue.sqlite"
    lines = [
        f'name = "{name}"',
        'data_dir = "state"',
        f'database_url = "{database_url or f"sqlite:///{sqlite}"}"',
        "[security]",
        *(f"{k} = {v}" for k, v in FAST_ARGON2.items()),
        "[transfer]",
        *(f"{k} = {v}" for k, v in transfer.items()),
        "[[stores]]",
        'name = "main"',
        'root = "stores/main"',
        "reserve_bytes = 0",
        extra_toml,
    ]
    path = directory / "librarian.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def clone_sites(
    root: Path,
    names: list[str],
    database_urls: list[str] | None = None,
    extra_toml: dict[str, str] | None = None,
    **transfer: object,
) -> Iterator[dict[str, CloneSite]]:
    """Librarians ``names`` under ``root``, each with an admin; not yet peers.
    ``extra_toml`` adds lines to some of their configs (by name)."""
    urls = database_urls or [""] * len(names)
    extra = extra_toml or {}
    with ExitStack() as stack:
        sites = {}
        for name, database_url in zip(names, urls, strict=True):
            config = site_config(
                root / name,
                name,
                database_url,
                {**TRANSFER_DEFAULTS, **transfer},
                extra.get(name, ""),
            )
            settings = load_settings(config)
            prepare(settings)
            ensure_secret_key(settings)
            catalogue = get_catalogue(settings.catalogue_url)
            with catalogue.session() as session:
                accounts.create_user(
                    session,
                    accounts.password_hasher(settings.security),
                    "admin",
                    "admin-password",
                    UserLevel.ADMIN,
                )
            client = stack.enter_context(
                TestClient(app=create_app(settings), raise_server_exceptions=False)
            )
            sites[name] = CloneSite(
                name, settings, catalogue, open_stores(settings), client, f"http://{name}.test"
            )
        yield sites


class DownLink:
    """A peer that does not answer: every call fails as a refused connection would."""

    def __init__(self, access: PeerAccess) -> None:
        self.name = access.name

    def _fail(self, *_: object) -> NoReturn:
        raise PeerCallFailed(f"{self.name}: cannot reach it: connection refused")

    identify = stage = query = post = validate = _fail

    def close(self) -> None:
        pass


def links_for(sites: dict[str, CloneSite], down: frozenset[str] = frozenset()) -> PeerLinks:
    """``PeerLinks`` that reach each site's in-process API through its TestClient; the
    sites named in ``down`` do not answer."""
    by_url = {site.url: site for site in sites.values()}

    def link(access: PeerAccess) -> PeerLink:
        site = by_url[access.url]
        if site.name in down:
            return DownLink(access)
        return HttpPeerLink(access, 30.0, http_client=site.client)

    return link


def befriend_both(a: CloneSite, b: CloneSite) -> None:
    befriend(a, b)
    befriend(b, a)


def befriend(a: CloneSite, b: CloneSite, *, enabled: bool = True) -> None:
    """``b`` becomes a peer of ``a``: b gets a callback account named after a, a a peer row."""
    with b.catalogue.session() as session:
        accounts.create_user(
            session,
            accounts.password_hasher(b.settings.security),
            a.name,
            PEER_PASSWORD,
            UserLevel.CALLBACK,
        )
    peers.add_peer(
        a.catalogue,
        a.settings,
        PeerCreate(
            name=b.name,
            url=b.url,
            user=a.name,
            password=PEER_PASSWORD,
            mover="local",
            transfers_enabled=enabled,
            check=False,
        ),
    )


def wait_for_tasks(site: CloneSite, timeout: float = 60.0) -> None:
    """Until every task of the site's local mover is over."""
    mover = site.mover
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(mover.status(task).status.final for task in mover.task_ids()):
            return
        time.sleep(0.02)
    raise AssertionError("local mover tasks did not finish")


def step_sender(
    site: CloneSite, sites: dict[str, CloneSite], down: frozenset[str] = frozenset()
) -> int:
    """What the clone sensor and clone_batch runs would do once; how many batch steps
    changed something (a deferred batch, or one still waiting, changed nothing)."""
    links = links_for(sites, down)
    clones.form_batches(site.catalogue, site.settings)
    with site.catalogue.session() as session:
        open_ids = session.scalars(
            select(TransferBatch.id).where(TransferBatch.status.in_(BATCH_OPEN))
        ).all()
    progress = 0
    for batch_id in open_ids:
        try:
            outcome = clones_run.run_batch(
                site.catalogue,
                site.settings,
                batch_id,
                links=links,
                movers=build_movers(site.settings),
            )
        except BatchDeferred as deferred:
            site.deferred.append(deferred.outcome.detail)
        else:
            site.outcomes.append(outcome)
            progress += outcome.step != "waiting"  # a task moving now is over next round
        wait_for_tasks(site)
    return progress


def step_receiver(site: CloneSite) -> int:
    """What receive_clones runs would do once: store every staged clone."""
    with site.catalogue.session() as session:
        staged = session.scalars(
            select(IncomingTransfer.id).where(
                IncomingTransfer.kind == TransferKind.CLONE,
                IncomingTransfer.status == TransferStatus.STAGED,
            )
        ).all()
    for transfer_id in staged:
        ingest_transfer(
            site.catalogue,
            site.stores,
            transfer_id,
            run_id="receive",
            run_is_active=lambda _: False,
            settings=site.settings,
        )
    return len(staged)


def deliver(
    site: CloneSite, sites: dict[str, CloneSite], down: frozenset[str] = frozenset()
) -> outbox_delivery.Delivery:
    return outbox_delivery.deliver(site.catalogue, site.settings, links_for(sites, down))


def pump(sites: dict[str, CloneSite], rounds: int = 20) -> None:
    """Run every site's senders, receivers and deliveries until nothing moves."""
    for _ in range(rounds):
        moved = 0
        for site in sites.values():
            moved += step_sender(site, sites)
            moved += step_receiver(site)
            report = deliver(site, sites)
            moved += report.delivered
        if not moved:
            return
    raise AssertionError(f"still moving after {rounds} rounds")


def peer_row(site: CloneSite, name: str) -> Librarian:
    with site.catalogue.session() as session:
        return peers.get_peer(session, name)


@contextmanager
def postgres_schemas(count: int) -> Iterator[list[str]]:
    """``count`` fresh PostgreSQL schemas (URLs whose search_path is each), dropped after."""
    import uuid

    from sqlalchemy import create_engine, text

    from tests.conftest import POSTGRES_URL

    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield [f"{POSTGRES_URL}{separator}options=-csearch_path%3D{name}" for name in names]
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()
