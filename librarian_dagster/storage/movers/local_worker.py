"""The worker process of one ``LocalMover`` task: ``python -m ... <task directory>``.

Holds the task's lock while it works (a second worker leaves at once), copies each item not
yet recorded with ``copy_and_hash`` (hashing while it copies, fsynced), and appends one
result line per item; then writes the task's end. It writes only into a librarian's
staging directories (``<root>/staging/<id>/<name>``): the destination comes from a peer.
Killed at any moment, it leaves at most one partial copy, which the next worker (started
by ``LocalMover.status``) replaces.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from librarian_dagster.storage.checksums import (
    DEFAULT_ALGORITHM,
    Checksum,
    ChecksumError,
)
from librarian_dagster.storage.movers.copy import copy_and_hash
from librarian_dagster.storage.movers.local import (
    CANCEL_FILE,
    FINAL_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    TASK_FILE,
    read_results,
    write_json_atomically,
)
from librarian_dagster.storage.movers.protocol import TaskStatus
from librarian_dagster.storage.posix import remove_if_present
from librarian_dagster.storage.tree import tree_size

_STAGING_ID = re.compile(r"[0-9a-f]{32}")


def _refusal(destination: Path) -> str | None:
    """Why ``destination`` is not a book's place in a librarian's staging area, if it is not.

    The peer names the destination: a copy (and the removal of a half-made one before it)
    goes only to ``<store root>/staging/<staging id>/<name>``, an existing directory that is
    no symlink, never anywhere else on this host.
    """
    parent = destination.parent
    if not destination.is_absolute() or destination.name in ("", ".", ".."):
        return f"{destination} is not an absolute path to a book"
    if not (_STAGING_ID.fullmatch(parent.name) and parent.parent.name == "staging"):
        return f"{destination} is not in a librarian's staging directory"
    if os.path.realpath(parent) != os.path.abspath(parent) or not parent.is_dir():
        return f"{parent} is not a real directory"
    return None


def _move(item: dict[str, Any]) -> dict[str, Any]:
    """Copy one item; its result line (without the index)."""
    source, destination = Path(item["source"]), Path(item["destination"])
    refused = _refusal(destination)
    if refused is not None:
        return {"done": False, "fault": f"refusing to write there: {refused}"}
    expected = Checksum.parse(item["checksum"]) if item.get("checksum") else None
    algorithm = expected.algorithm if expected else DEFAULT_ALGORITHM
    remove_if_present(destination)  # a copy a killed worker left half-made
    try:
        read = copy_and_hash(source, destination, algorithm)
    except (OSError, ChecksumError) as error:
        return {"done": False, "fault": f"{type(error).__name__}: {error}"}
    if expected is not None and read != expected:
        remove_if_present(destination)
        return {
            "done": False,
            "checksum": str(read),
            "fault": (
                f"the source {source} reads as {read}, not {expected}: the copy here does not "
                "match the catalogue; nothing was delivered"
            ),
        }
    return {"done": True, "checksum": str(read), "bytes": tree_size(destination) or 0}


def run(task_dir: Path) -> int:
    lock = os.open(task_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another worker has it
    if (task_dir / FINAL_FILE).exists():
        return 0
    task = json.loads((task_dir / TASK_FILE).read_text())
    done = read_results(task_dir)
    with open(task_dir / RESULTS_FILE, "a") as results:
        for index, item in enumerate(task["items"]):
            if index in done:
                continue
            if (task_dir / CANCEL_FILE).exists():
                write_json_atomically(
                    task_dir / FINAL_FILE,
                    {"status": TaskStatus.CANCELLED.value, "fault": "cancelled"},
                )
                return 0
            record = {"index": index, **_move(item)}
            results.write(json.dumps(record) + "\n")
            results.flush()
            os.fsync(results.fileno())
            done[index] = record
    faults = [record for record in done.values() if not record["done"]]
    final: dict[str, Any] = {"status": TaskStatus.SUCCEEDED.value}
    if faults:
        final = {
            "status": TaskStatus.FAILED.value,
            "fault": f"{len(faults)} of {len(done)} items failed; first: {faults[0]['fault']}",
        }
    write_json_atomically(task_dir / FINAL_FILE, final)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
