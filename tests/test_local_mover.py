"""``LocalMover``: background tasks on this host with the semantics of a Globus task.

Real worker processes copy real files: a task id and a report by that id alone, per-item
faults (a source that does not match its checksum is not delivered), the same submission
id never moves twice, a dead worker is replaced and finishes the task, cancel stops it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.movers.local import RESULTS_FILE, LocalMover
from librarian_dagster.storage.movers.protocol import MoveItem, Mover, MoverError, TaskStatus


def wait_final(mover: LocalMover, task_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = mover.status(task_id)
        if report.status.final:
            return report
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {mover.status(task_id)}")


def make_books(tmp_path: Path) -> tuple[list[MoveItem], Path]:
    """Two books (a file, a directory) and a peer's staging directory to send them to."""
    source, staging = tmp_path / "source", tmp_path / "store" / "staging" / ("5" * 32)
    source.mkdir()
    staging.mkdir(parents=True)
    (source / "a.dat").write_bytes(b"a" * 1000)
    directory = source / "dir"
    (directory / "sub").mkdir(parents=True)
    (directory / "sub" / "x").write_bytes(b"x" * 3_000_000)  # above the one-pass size
    (directory / "y").write_bytes(b"y")
    items = [
        MoveItem(
            str(source / name),
            str(staging / name),
            checksum=str(hash_path(source / name)),
            recursive=name == "dir",
        )
        for name in ("a.dat", "dir")
    ]
    return items, staging


def test_a_local_mover_is_a_mover(tmp_path: Path) -> None:
    assert isinstance(LocalMover(tmp_path), Mover)


def test_a_task_copies_every_book_and_reports_by_id_alone(tmp_path: Path) -> None:
    items, _ = make_books(tmp_path)
    mover = LocalMover(tmp_path / "tasks")
    task_id = mover.submit(items, label="batch 1", submission_id=mover.new_submission_id())
    # Another process (a sensor after a restart) needs only the id and the state directory.
    report = wait_final(LocalMover(tmp_path / "tasks"), task_id)
    assert report.status == TaskStatus.SUCCEEDED and report.fault is None
    assert [result.item for result in report.items] == items
    assert all(result.done and result.checksum == result.item.checksum for result in report.items)
    assert report.bytes_moved == 1000 + 3_000_000 + 1
    for item in items:
        assert str(hash_path(item.destination)) == item.checksum
    assert mover.task_ids() == [task_id] and mover.items_of(task_id) == items


def test_a_source_that_does_not_match_its_checksum_is_not_delivered(tmp_path: Path) -> None:
    items, staging = make_books(tmp_path)
    Path(items[0].source).write_bytes(b"b" * 1000)  # our copy went bad after it was catalogued
    mover = LocalMover(tmp_path / "tasks")
    report = wait_final(mover, mover.submit(items, label="b", submission_id="0" * 32))
    assert report.status == TaskStatus.FAILED and "1 of 2 items failed" in (report.fault or "")
    (bad,) = report.failed_items
    assert bad.item == items[0] and not bad.done and "does not match" in (bad.fault or "")
    assert not (staging / "a.dat").exists()  # nothing half-true left at the peer
    assert (staging / "dir" / "sub" / "x").stat().st_size == 3_000_000


def test_a_missing_source_is_a_fault_of_that_item_only(tmp_path: Path) -> None:
    items, _ = make_books(tmp_path)
    items[1] = MoveItem(str(tmp_path / "gone"), str(Path(items[1].destination).parent / "gone"))
    mover = LocalMover(tmp_path / "tasks")
    report = wait_final(mover, mover.submit(items, label="b", submission_id="1" * 32))
    assert [result.done for result in report.items] == [True, False]
    assert "FileNotFoundError" in (report.items[1].fault or "")


def test_the_same_submission_id_moves_nothing_twice(tmp_path: Path) -> None:
    items, _ = make_books(tmp_path)
    mover = LocalMover(tmp_path / "tasks")
    submission = mover.new_submission_id()
    first = mover.submit(items, label="b", submission_id=submission)
    wait_final(mover, first)
    again = mover.submit(items, label="b", submission_id=submission)
    assert again == first and mover.task_ids() == [first]
    lines = (tmp_path / "tasks" / first / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == len(items)


def test_a_dead_worker_is_replaced_and_skips_what_was_done(tmp_path: Path) -> None:
    items, staging = make_books(tmp_path)
    # A worker that never runs (as if killed at once): the task waits, active.
    stuck = LocalMover(tmp_path / "tasks", python="/bin/true")
    task_id = stuck.submit(items, label="b", submission_id="2" * 32)
    # As if a worker had copied the first book and died inside the second: a result line
    # for book 0 (its copy is not even there: a recorded book is not copied again) and a
    # half-made copy of book 1, which the next worker replaces.
    results = tmp_path / "tasks" / task_id / RESULTS_FILE
    results.write_text(json.dumps({"index": 0, "done": True, "bytes": 1000}) + "\n")
    (staging / "dir").mkdir()
    (staging / "dir" / "partial").write_bytes(b"half")
    assert stuck.status(task_id).status == TaskStatus.ACTIVE
    report = wait_final(LocalMover(tmp_path / "tasks"), task_id)
    assert report.status == TaskStatus.SUCCEEDED
    assert not (staging / "a.dat").exists()
    assert str(hash_path(staging / "dir")) == items[1].checksum


def test_cancel_stops_a_task_before_its_next_book(tmp_path: Path) -> None:
    items, staging = make_books(tmp_path)
    stuck = LocalMover(tmp_path / "tasks", python="/bin/true")
    task_id = stuck.submit(items, label="b", submission_id="3" * 32)
    stuck.cancel(task_id)
    report = wait_final(LocalMover(tmp_path / "tasks"), task_id)
    assert report.status == TaskStatus.CANCELLED and report.items == ()
    assert list(staging.iterdir()) == []
    LocalMover(tmp_path / "tasks").cancel(task_id)  # final already: nothing changes
    assert LocalMover(tmp_path / "tasks").status(task_id).status == TaskStatus.CANCELLED


def test_unknown_and_malformed_task_ids(tmp_path: Path) -> None:
    mover = LocalMover(tmp_path / "tasks")
    for task_id in ("f" * 32, "../../etc", "x"):
        with pytest.raises(MoverError, match="no local task"):
            mover.status(task_id)
    with pytest.raises(MoverError, match="nothing to move"):
        mover.submit([], label="empty", submission_id="4" * 32)
    with pytest.raises(MoverError, match="no local task"):
        mover.submit([MoveItem("a", "b")], label="bad id", submission_id="../escape")


def test_it_writes_nowhere_but_into_a_librarians_staging(tmp_path: Path) -> None:
    """The destination comes from a peer: a copy (and the removal of a half-made one) goes
    only to <root>/staging/<id>/<name>, never over anything else on this host."""
    items, staging = make_books(tmp_path)
    precious = tmp_path / "precious.txt"
    precious.write_text("not yours")
    link = tmp_path / "store" / "staging" / ("6" * 32)
    link.symlink_to(staging)
    bad = [
        MoveItem(items[0].source, str(precious), checksum=items[0].checksum),
        MoveItem(items[0].source, str(tmp_path / "store" / "staging" / "a.dat")),
        MoveItem(items[0].source, str(link / "a.dat")),
        MoveItem(items[0].source, "relative/staging/" + "7" * 32 + "/a.dat"),
    ]
    mover = LocalMover(tmp_path / "tasks")
    report = wait_final(mover, mover.submit(bad, label="b", submission_id="8" * 32))
    assert report.status == TaskStatus.FAILED and len(report.failed_items) == 4
    assert all("refusing to write there" in (r.fault or "") for r in report.items)
    assert precious.read_text() == "not yours" and list(staging.iterdir()) == []
