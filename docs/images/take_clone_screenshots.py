"""Take the clone screenshots in this folder: a peer's asset, a batch's run, a book's copies.
Not a test; run from the repository root with the venv:

    .venv/bin/python docs/images/take_clone_screenshots.py docs/images

It starts two real librarians (site-a, site-b) in /tmp, makes them peers through the API,
uploads books at site-a and lets them reach site-b; then pauses site-b and uploads three
more, so that site-b's asset shows books it holds and books it lacks; then screenshots
site-a's Dagster UI in headless Chromium.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
os.environ.setdefault("LIBRARIAN_STATE_DIR", tempfile.mkdtemp(prefix="librarian-shots-state-"))

from take_screenshots import shot  # noqa: E402

from librarian_dagster.client import LibrarianClient  # noqa: E402
from tests.clone_live import admin, connect, make_books, scalar, site, wait_for  # noqa: E402
from tests.test_ui_truth import graphql  # noqa: E402

RUNS = """{ runsOrError(filter: {pipelineName: "clone_batch"}, limit: 20) {
  ... on Runs { results { runId status } } } }"""


def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="librarian-clone-shots-"))
    a, b = site(root, "site-a"), site(root, "site-b")
    a.start()
    b.start()
    try:
        connect(a, b)
        connect(b, a)
        with admin(a) as client:
            client.post(
                "/users", json={"name": "alice", "password": "alice-pass", "level": "read_append"}
            )
        with LibrarianClient(a.api_url, "alice", "alice-pass") as alice:
            alice.upload_many(make_books(root / "first", 9))
            held = "SELECT count(*) FROM remote_instances"
            wait_for(lambda: scalar(a, held) == 9, 300, "9 books at site-b", a, b)
            with admin(a) as client:
                client.patch("/peers/site-b", json={"transfers_enabled": False})
            alice.upload_many(make_books(root / "later", 3, prefix="2026/12/08"))
        time.sleep(12)  # the copies sensor shows confirmed copies ~10 s after they are recorded
        runs = graphql(a, RUNS)["runsOrError"]["results"]
        settled = next(run for run in runs if run["status"] == "SUCCESS")
        ui = a.webserver_url
        shot(f"{ui}/assets/peers/site-b?view=partitions", out / "peer-asset-partitions.png")
        shot(f"{ui}/asset-groups/peers/lineage", out / "peer-asset-lineage.png")
        shot(f"{ui}/runs/{settled['runId']}", out / "clone-batch-run.png")
        book = "2026%2F12%2F07%2Fbook0000"
        shot(f"{ui}/assets/book?view=partitions&partition={book}", out / "book-copies.png")
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
