"""A flipped byte, found and repaired between real librarians (``librarian serve`` each).

site-a sends two books to site-b. One byte of site-b's stored copy is flipped (same size,
same mtime as far as anyone cares). ``verify_integrity``, launched with ``dagster job
launch`` against site-b's DAGSTER_HOME (with a tiny ``period_days`` so that every copy is
due), finds it: the run fails, the copy is recorded corrupt and taken out of service. Then,
unattended: site-b's ``repair_sensor`` asks site-a, whose copy verifies, to re-send it;
site-a's clone pipeline sends it; site-b verifies it, puts it in place of the bad one and
closes the record and its event. The next pass is green.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from librarian_dagster.client import LibrarianClient
from librarian_dagster.storage.checksums import Checksum, hash_path
from tests.clone_live import connect, query, scalar, site, wait_for
from tests.live import ADMIN_PASSWORD, BIN, LiveLibrarian

pytestmark = pytest.mark.live


@pytest.fixture
def running() -> Iterator[list[LiveLibrarian]]:
    started: list[LiveLibrarian] = []
    yield started
    for librarian in started:
        librarian.stop()


def launch_verify(librarian: LiveLibrarian) -> None:
    home = librarian.directory / "state" / "dagster"
    launched = subprocess.run(
        [
            *(str(BIN / "dagster"), "job", "launch", "-w", str(home / "workspace.yaml")),
            *("-j", "verify_integrity"),
        ],
        env={**librarian.env(), "DAGSTER_HOME": str(home)},
        cwd=librarian.directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr


def verify_runs(librarian: LiveLibrarian) -> list[str]:
    with librarian.dagster_instance() as instance:
        runs = instance.get_runs(limit=50)
    return [run.status.value for run in reversed(runs) if run.job_name == "verify_integrity"]


def test_a_flipped_byte_at_b_is_found_and_repaired_from_a(
    tmp_path: Path, running: list[LiveLibrarian]
) -> None:
    a = site(tmp_path, "site-a")
    b = site(tmp_path, "site-b", "[integrity]", "period_days = 0.00001")  # 0.9 s: all due
    for librarian in (a, b):
        librarian.start()
        running.append(librarian)
    connect(a, b)
    connect(b, a)
    names = ["2026/12/07/zen.2461000.uvh5", "2026/12/07/zen.2461001.uvh5"]
    with LibrarianClient(a.api_url, "admin", ADMIN_PASSWORD) as client:
        for name in names:
            source = tmp_path / name.replace("/", "_")
            source.write_bytes(os.urandom(64 * 1024))
            client.upload(source, name)
    at_b = "SELECT count(*) FROM remote_instances"
    wait_for(lambda: scalar(a, at_b) == 2, 240, "both books at site-b", a, b)

    victim = names[1]
    ((path, checksum),) = query(
        b,
        "SELECT i.path, f.checksum FROM instances i JOIN files f ON f.id = i.file_id "
        "WHERE f.name = :name",
        name=victim,
    )
    stored = Path(path)
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0x01
    stored.write_bytes(bytes(data))
    stored.chmod(0o444)
    expected = Checksum.parse(checksum)
    assert hash_path(stored, expected.algorithm) != expected

    time.sleep(1.0)  # every copy is due after 0.7 s
    launch_verify(b)
    record = "SELECT status FROM corrupt_files"
    wait_for(lambda: bool(query(b, record)), 180, "the corrupt copy recorded at b", a, b)
    wait_for(lambda: "FAILURE" in verify_runs(b), 120, "the verify run to fail", b)
    (event,) = query(b, "SELECT message FROM events WHERE kind = 'copy_mismatch'")
    assert victim in event[0]

    # Unattended from here: b's repair sensor asks a; a's clone pipeline re-sends it.
    wait_for(
        lambda: [row[0] for row in query(b, record)] == ["repaired"],
        300,
        "the copy repaired from site-a",
        a,
        b,
    )
    assert hash_path(stored, expected.algorithm) == expected
    resolved = query(b, "SELECT resolved FROM events WHERE kind = 'copy_mismatch'")
    assert [bool(row[0]) for row in resolved] == [True]
    assert scalar(
        b,
        "SELECT available FROM instances i JOIN files f ON f.id = i.file_id WHERE f.name = :name",
        name=victim,
    )
    with b.dagster_instance() as instance:
        repairs = [r for r in instance.get_runs(limit=50) if r.job_name == "repair_copies"]
    assert repairs and repairs[0].status.value == "SUCCESS"

    # The next pass reads both copies good: green.
    launch_verify(b)
    wait_for(lambda: verify_runs(b)[-1:] == ["SUCCESS"], 180, "a green verify run", b)
    assert json.loads(json.dumps(verify_runs(b)))[0] == "FAILURE"
