"""SneakerNet between real librarians: ``librarian serve`` processes, their daemons and runs.

site-a's drive (a directory with a small ``capacity_bytes``) is filled by a
``dagster job launch`` of ``fill_sneaker_drive`` against site-a's own DAGSTER_HOME, then by
its sensor until the next book does not fit: the drive is full and the alert is recorded.
``librarian sneaker manifest`` ships it; site-a goes down; site-b ingests the drive through
``librarian sneaker ingest``; site-a's wipe refuses; site-a comes back, site-b's callbacks
arrive, site-a knows every book is at site-b, and the wipe goes through. The peers' network
transfers are paused: every book travels on the drive.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from librarian_dagster.client import LibrarianClient
from tests.clone_live import PEER_PASSWORD, admin, query, scalar, site, wait_for
from tests.live import BIN, LiveLibrarian

pytestmark = pytest.mark.live

BOOK_BYTES = 1000
CAPACITY = 5 * BOOK_BYTES + 500  # five books fit, the sixth does not


def befriend(a: LiveLibrarian, b: LiveLibrarian, *, transfers: bool) -> None:
    """b becomes a's peer (network transfers on or paused)."""
    with admin(b) as client:
        made = client.post(
            "/users", json={"name": a.name, "password": PEER_PASSWORD, "level": "callback"}
        )
        assert made.status_code == 201, made.text
    with admin(a) as client:
        added = client.post(
            "/peers",
            json={
                "name": b.name,
                "url": b.api_url,
                "user": a.name,
                "password": PEER_PASSWORD,
                "mover": "local",
                "transfers_enabled": transfers,
            },
        )
        assert added.status_code == 201, added.text


def upload(librarian: LiveLibrarian, tmp: Path, names: list[str]) -> None:
    with LibrarianClient(librarian.api_url, "admin", "live-admin-password") as client:
        for name in names:
            source = tmp / name.replace("/", "_")
            source.write_bytes(os.urandom(BOOK_BYTES))
            client.upload(source, name)


def on_drive(a: LiveLibrarian) -> list[str]:
    return [
        row[0]
        for row in query(
            a,
            "SELECT f.name FROM files f JOIN instances i ON i.file_id = f.id "
            "JOIN stores s ON s.id = i.store_id WHERE s.name = 'drive1' ORDER BY f.id",
        )
    ]


def drive_state(a: LiveLibrarian) -> str:
    return str(scalar(a, "SELECT state FROM stores WHERE name = 'drive1'"))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[LiveLibrarian]]:
    started: list[LiveLibrarian] = []
    yield started
    for librarian in started:
        librarian.stop()


def test_a_drive_carries_books_from_a_to_b_and_comes_back_empty(
    tmp_path: Path, running: list[LiveLibrarian]
) -> None:
    drive = tmp_path / "drive1"
    drive.mkdir()
    a = site(
        tmp_path,
        "site-a",
        "[[stores]]",
        'name = "drive1"',
        'kind = "sneaker"',
        f'root = "{drive}"',
        "require_mount = false",
        "reserve_bytes = 0",
        f"capacity_bytes = {CAPACITY}",
        'destination = "site-b"',
    )
    b = site(tmp_path, "site-b")
    for librarian in (a, b):
        librarian.start()
        running.append(librarian)
    befriend(a, b, transfers=False)
    befriend(b, a, transfers=True)
    books = [f"2026/12/07/obs{i:02d}.uvh5" for i in range(7)]

    # By hand, as the README shows: dagster job launch against site-a's DAGSTER_HOME.
    upload(a, tmp_path, books[:2])
    home = a.directory / "state" / "dagster"
    launched = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            str(home / "workspace.yaml"),
            "-j",
            "fill_sneaker_drive",
            "--config-json",
            json.dumps({"ops": {"fill_drive": {"config": {"store": "drive1"}}}}),
        ],
        env={**a.env(), "DAGSTER_HOME": str(home)},
        cwd=a.directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    wait_for(lambda: on_drive(a) == books[:2], 180, "the launched fill", a, b)
    with a.dagster_instance() as instance:
        runs = instance.get_runs(limit=20)
    by_hand = [
        r
        for r in runs
        if r.job_name == "fill_sneaker_drive" and not r.tags.get("dagster/sensor_name")
    ]
    assert by_hand, [(r.job_name, r.tags) for r in runs]
    wait_for(lambda: _status(a, by_hand[-1].run_id) in ("SUCCESS", "FAILURE"), 120, "its end", a)
    assert _status(a, by_hand[-1].run_id) == "SUCCESS"

    # The sensor keeps the drive filling until the next book does not fit.
    upload(a, tmp_path, books[2:])
    wait_for(lambda: drive_state(a) == "full", 240, "a full drive", a, b)
    assert on_drive(a) == books[:5]
    (alert,) = query(a, "SELECT message FROM events WHERE kind = 'drive_full'")
    assert "Drive drive1 is full" in alert[0] and "5 books" in alert[0]

    # Shipped: the manifest, then site-a goes down.
    out = tmp_path / "drive1-manifest.json"
    shipped = a.librarian("sneaker", "manifest", "--store", "drive1", "--out", str(out))
    assert shipped.returncode == 0, shipped.stderr + shipped.stdout
    assert drive_state(a) == "in_transit"
    assert [book["name"] for book in json.loads(out.read_text())["books"]] == books[:5]
    a.stop()
    running.remove(a)

    ingest = subprocess.run(
        [
            *(str(BIN / "librarian"), "sneaker", "ingest", "--drive", str(drive)),
            *("--url", b.api_url, "--user", "admin"),
        ],
        env={**b.env(), "LIBRARIAN_PASSWORD": "live-admin-password"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    assert "stored" in ingest.stdout and "refused" not in ingest.stdout
    stored_at_b = query(b, "SELECT name, source FROM files ORDER BY name")
    assert [tuple(row) for row in stored_at_b] == [(name, "site-a") for name in books[:5]]

    refused = a.librarian("sneaker", "wipe", "--store", "drive1")
    assert refused.returncode == 1
    assert "5 books on the drive have no confirmed copy at a peer" in refused.stderr
    assert len(list((drive / "store").rglob("*.uvh5"))) == 5

    # site-a is back: site-b's callbacks arrive.
    a.start()
    running.append(a)
    held = (
        "SELECT count(*) FROM remote_instances r JOIN librarians l ON l.id = r.librarian_id "
        "WHERE l.name = 'site-b'"
    )
    wait_for(lambda: scalar(a, held) == 5, 180, "site-b's callbacks at site-a", a, b)
    assert drive_state(a) == "returned"
    wiped = a.librarian("sneaker", "wipe", "--store", "drive1")
    assert wiped.returncode == 0, wiped.stderr + wiped.stdout
    assert list((drive / "store").rglob("*.uvh5")) == []
    assert drive_state(a) == "filling"


def _status(librarian: LiveLibrarian, run_id: str) -> str:
    with librarian.dagster_instance() as instance:
        run = instance.get_run_by_id(run_id)
        return run.status.value if run is not None else "?"
