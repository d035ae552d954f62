"""The mover protocol, with a trivial in-process mover; and the ``mover`` resource.

``InlineMover`` is the smallest thing that honours the protocol: it copies each item with
``copy_and_hash`` during ``submit`` and remembers the report. It shows what every mover owes
its caller (a task id, a report by that id alone, per-item faults, cancel) and is what the
clone pipeline's tests will be written against before ``LocalMover`` and ``GlobusMover``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from librarian_dagster.resources import MoverResource
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.movers.copy import copy_and_hash
from librarian_dagster.storage.movers.protocol import (
    ItemResult,
    MoveItem,
    Mover,
    MoverError,
    MoverUnavailable,
    TaskReport,
    TaskStatus,
)


class InlineMover:
    """Copies at ``submit``; with ``deferred`` a task stays active until ``run_pending``."""

    name = "inline"

    def __init__(self, *, deferred: bool = False) -> None:
        self._ids = itertools.count(1)
        self._reports: dict[str, TaskReport] = {}
        self._pending: dict[str, Sequence[MoveItem]] = {}
        self._deferred = deferred

    def new_submission_id(self) -> str:
        return f"inline-{next(self._ids)}"

    def submit(
        self,
        items: Sequence[MoveItem],
        *,
        label: str,
        submission_id: str,
        endpoint: str | None = None,
    ) -> str:
        if not items:
            raise MoverError(f"{label}: nothing to move")
        task_id = submission_id
        if task_id in self._reports:
            return task_id  # the same submission: the same task, nothing moved twice
        if self._deferred:
            self._pending[task_id] = items
            self._reports[task_id] = TaskReport(task_id, TaskStatus.ACTIVE)
        else:
            self._move(task_id, items)
        return task_id

    def run_pending(self) -> None:
        for task_id, items in list(self._pending.items()):
            del self._pending[task_id]
            self._move(task_id, items)

    def _move(self, task_id: str, items: Sequence[MoveItem]) -> None:
        results, moved = [], 0
        for item in items:
            try:
                copy_and_hash(item.source, item.destination)
            except OSError as error:
                results.append(ItemResult(item, done=False, fault=f"{type(error).__name__}"))
                continue
            moved += Path(item.destination).stat().st_size
            results.append(ItemResult(item, done=True))
        failed = any(result.fault for result in results)
        self._reports[task_id] = TaskReport(
            task_id,
            TaskStatus.FAILED if failed else TaskStatus.SUCCEEDED,
            tuple(results),
            fault="some items failed" if failed else None,
            bytes_moved=moved,
        )

    def status(self, task_id: str) -> TaskReport:
        try:
            return self._reports[task_id]
        except KeyError:
            raise MoverError(f"no task {task_id!r}") from None

    def cancel(self, task_id: str) -> None:
        report = self.status(task_id)
        if not report.status.final:
            self._pending.pop(task_id, None)
            self._reports[task_id] = TaskReport(task_id, TaskStatus.CANCELLED, report.items)


def test_an_inline_mover_is_a_mover() -> None:
    assert isinstance(InlineMover(), Mover)
    assert not isinstance(object(), Mover)


def test_submit_returns_a_task_whose_report_says_every_item_arrived(tmp_path: Path) -> None:
    sources = []
    for i in range(3):
        source = tmp_path / f"book{i}"
        source.write_bytes(b"x" * (i + 1))
        sources.append(source)
    items = [MoveItem(str(s), str(tmp_path / "out" / s.name)) for s in sources]
    (tmp_path / "out").mkdir()
    mover = InlineMover()
    task_id = mover.submit(items, label="batch 1", submission_id=mover.new_submission_id())
    report = mover.status(task_id)
    assert report.status == TaskStatus.SUCCEEDED and report.status.final
    assert [r.item for r in report.items] == items and all(r.done for r in report.items)
    assert report.failed_items == () and report.bytes_moved == 6
    for item in items:
        assert hash_path(item.destination) == hash_path(item.source)


def test_a_failed_item_fails_the_task_with_the_movers_words(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"ok")
    items = [
        MoveItem(str(good), str(tmp_path / "good.copy")),
        MoveItem(str(tmp_path / "missing"), str(tmp_path / "missing.copy")),
    ]
    mover = InlineMover()
    report = mover.status(
        mover.submit(items, label="batch 2", submission_id=mover.new_submission_id())
    )
    assert report.status == TaskStatus.FAILED and report.fault
    (failed,) = report.failed_items
    assert failed.item == items[1] and failed.fault == "FileNotFoundError" and not failed.done


def test_unknown_tasks_and_cancel_of_a_final_task(tmp_path: Path) -> None:
    mover = InlineMover()
    with pytest.raises(MoverError, match="no task"):
        mover.status("nope")
    source = tmp_path / "s"
    source.write_bytes(b"s")
    task_id = mover.submit(
        [MoveItem(str(source), str(tmp_path / "d"))], label="b", submission_id="inline-b"
    )
    mover.cancel(task_id)  # already final: nothing changes
    assert mover.status(task_id).status == TaskStatus.SUCCEEDED
    assert [status for status in TaskStatus if status.final] == [
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    ]


def test_an_active_task_can_be_cancelled_and_then_moves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "s"
    source.write_bytes(b"s")
    mover = InlineMover(deferred=True)
    kept = mover.submit(
        [MoveItem(str(source), str(tmp_path / "kept"))], label="kept", submission_id="k"
    )
    dropped = mover.submit(
        [MoveItem(str(source), str(tmp_path / "dropped"))], label="dropped", submission_id="d"
    )
    assert mover.status(dropped).status == TaskStatus.ACTIVE and not TaskStatus.ACTIVE.final
    mover.cancel(dropped)
    mover.run_pending()
    assert mover.status(dropped).status == TaskStatus.CANCELLED
    assert mover.status(kept).status == TaskStatus.SUCCEEDED
    assert (tmp_path / "kept").exists() and not (tmp_path / "dropped").exists()


def test_the_mover_resource_says_which_movers_exist(
    make_settings: Callable[..., LibrarianSettings],
) -> None:
    settings = make_settings()
    resource = MoverResource(config_file=str(settings.config_file))
    with pytest.raises(MoverUnavailable, match="no 'globus' mover on this librarian") as caught:
        resource.get("globus")
    assert caught.value.needs_operator and caught.value.name == "globus"
