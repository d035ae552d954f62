"""Take the screenshots in this folder: a refused upload's failed run, failed checks, a damaged
book's partition. Not a test; run from the repository root with the venv:

    .venv/bin/python docs/images/take_screenshots.py docs/images

It starts a real librarian (tests.live.LiveLibrarian) in /tmp, uploads one good book and one
whose checksum is wrong, damages the good one's stored copy, runs ``checksums_match`` twice
through the UI's own GraphQL mutation, then screenshots pages in headless Chromium.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("LIBRARIAN_STATE_DIR", tempfile.mkdtemp(prefix="librarian-shots-state-"))

from librarian_dagster.client import LibrarianClient
from tests.live import ADMIN_PASSWORD, LiveLibrarian
from tests.test_ui_truth import (
    CHECK_EXECUTION,
    LAUNCH,
    failed_ingest_run,
    graphql,
    upload_with_wrong_checksum,
    wait_final,
    wait_refused,
)


def shot(url: str, out: Path) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-")  # a fresh profile: what a new user sees
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--window-size=1440,1000",
            "--virtual-time-budget=20000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(profile, ignore_errors=True)


def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="librarian-shots-"))
    site = LiveLibrarian(root, name="site-a")
    site.start()
    try:
        good = root / "good.dat"
        good.write_bytes(b"good " * 1000)
        bad = root / "bad.dat"
        bad.write_bytes(b"nope")
        with LibrarianClient(site.api_url, "admin", ADMIN_PASSWORD) as client:
            client.upload(good, "2026/12/02/obs_0001")
            wait_refused(client, upload_with_wrong_checksum(client, bad, "2026/12/02/obs_0002"))
            stored = Path(client.get_file("2026/12/02/obs_0001").instances[0].path)
        failed = failed_ingest_run(site, "2026/12/02/obs_0002")
        stored.chmod(0o644)
        stored.write_bytes(b"bit rot")
        for _ in range(2):
            launched = graphql(site, LAUNCH, executionParams=CHECK_EXECUTION)[
                "launchPipelineExecution"
            ]
            wait_final(site, launched["run"]["runId"])
        shot(f"{site.webserver_url}/runs", out / "runs-list.png")
        shot(f"{site.webserver_url}/runs/{failed['runId']}", out / "failed-ingest-run.png")
        shot(f"{site.webserver_url}/assets/book?view=checks", out / "failed-check.png")
        partition = "2026%2F12%2F02%2Fobs_0001"
        shot(
            f"{site.webserver_url}/assets/book?view=partitions&partition={partition}",
            out / "corrupt-partition.png",
        )
    finally:
        site.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
