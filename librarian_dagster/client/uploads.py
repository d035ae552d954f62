"""The upload protocol on the client side: stage → copy (hashing) → commit → wait.

1. ``POST /uploads {name, size}`` (no checksum: it is computed while copying, so the book is
   not read beforehand just to hash it);
2. the bytes go into the staging directory, either by a shared-filesystem copy
   (``copy_and_hash``) or streamed with ``PUT /uploads/{id}/content`` (a file, or a tar
   stream generated on the fly), hashing on the way;
3. ``POST /uploads/{id}/commit {checksum}``; the librarian verifies the staged bytes
   against that checksum during ingest, so the check is end to end;
4. poll (every tenth of the time waited, 0.05 s to 1 s) until ``stored``, or raise
   ``UploadFailed`` with the server's reason for ``failed``/``cancelled``.

Anything that goes wrong between staging and commit cancels the upload (``DELETE``), so no
half-copied staging directory stays promised to a name. Many books go phase by phase (stage
all, copy all, commit all, wait once with ``POST /uploads/status``): committing together
lets the librarian ingest them in one run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Literal

import httpx

from librarian_dagster.client.errors import (
    ConnectionFailed,
    LibrarianError,
    UploadFailed,
    UploadFailure,
    one_line,
    read_model,
)
from librarian_dagster.client.transfer import LocalBook, body_for, scan_book
from librarian_dagster.states import FINAL_STATUSES, TransferStatus
from librarian_dagster.storage.checksums import (
    Checksum,
    ChecksumError,
    EmptyBookError,
    Progress,
    hash_path,
)
from librarian_dagster.storage.movers.copy import copy_and_hash
from librarian_dagster.storage.names import InvalidNameError, normalise_name, validate_new_name
from librarian_dagster.storage.posix import remove_if_present
from librarian_dagster.wire import UploadCommit, UploadCreate, UploadInfo

if TYPE_CHECKING:
    from librarian_dagster.client.client import LibrarianClient

Transfer = Literal["auto", "local", "http"]
WaitProgress = Callable[[int, int], None]

FIRST_POLL = 0.05
MAX_POLL = 1.0


def as_name(dest: PurePath | str) -> str:
    """A catalogue name from a ``Path`` (POSIX separators) or a string."""
    return dest.as_posix() if isinstance(dest, PurePath) else dest


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _ours(path: Path) -> bool:
    """Whether the librarian runs as this user: it created ``path``, its staging directory.

    Ingest seals the staged files read-only (``fchmod``), which only their owner may do: a
    copy made as another user would fail ingest, so ``auto`` streams over HTTP instead.
    """
    try:
        return path.stat().st_uid == os.geteuid()
    except OSError:
        return False


@dataclass
class UploadItem:
    """One book going through an upload: where it is, what it will be called, how far it got."""

    local: Path
    name: str
    book: LocalBook
    info: UploadInfo | None = None
    resumed: bool = False
    committed: bool = False
    cancelled: bool = False

    @property
    def upload_id(self) -> int:
        assert self.info is not None, "not staged yet"
        return self.info.upload_id


def prepare(local: Path | str, dest: PurePath | str) -> UploadItem:
    """Check the name and scan the local book: refuse bad input before staging anything.

    An empty directory (no file anywhere in it) is refused here, as the librarian would.
    """
    local = Path(local)
    name = normalise_name(as_name(dest))
    try:
        validate_new_name(name)
    except InvalidNameError as error:
        raise LibrarianError(f"invalid name: {error}") from None
    try:
        book = scan_book(local)
    except FileNotFoundError:
        raise LibrarianError(f"{local}: no such file or directory") from None
    except ChecksumError as error:  # symlinks, devices, ... inside the book
        raise LibrarianError(f"cannot upload {local}: {error}") from error
    except OSError as error:
        raise LibrarianError(f"cannot read {local}: {error.strerror or error}") from error
    if book.is_directory and not book.files:  # the librarian would refuse it (400)
        raise LibrarianError(str(EmptyBookError(str(local))))
    return UploadItem(local, name, book)


class Uploader:
    """The steps of an upload, for one call of ``upload``/``upload_many`` of one client."""

    def __init__(
        self, client: LibrarianClient, transfer: Transfer, progress: Progress | None
    ) -> None:
        self.client = client
        self.transfer = transfer
        self.progress = progress

    def stage(self, item: UploadItem) -> None:
        body = UploadCreate(name=item.name, size=item.book.size)
        response = self.client.request("POST", "/uploads", json=body.model_dump(exclude_none=True))
        item.info = read_model(response, UploadInfo)
        item.resumed = response.status_code == 200

    def _choose(self, item: UploadItem) -> Literal["local", "http"]:
        """``auto``: ``local`` when the staging directory is here, writable and ours.

        The staging directory's name is a fresh UUID, so finding it here means this host
        mounts the store's filesystem; it must also belong to this user (see ``_ours``).
        An explicit ``local`` needs only write access (e.g. for a librarian allowed to
        chmod others' files).
        """
        assert item.info is not None
        if self.transfer == "http":
            return "http"
        staging_dir = Path(item.info.staging_path).parent
        writable = _writable_dir(staging_dir)
        if self.transfer == "local":
            if not writable:
                raise LibrarianError(
                    f"staging directory {staging_dir} is not writable from here; "
                    "use the http transfer"
                )
            return "local"
        return "local" if writable and _ours(staging_dir) else "http"

    def _send(self, item: UploadItem) -> Checksum | None:
        """Put the bytes into staging, hashing them on the way; None if already committed."""
        assert item.info is not None
        if item.resumed and item.info.status != TransferStatus.INITIATED:
            self._check_resumed(item)
            return None
        try:
            if self._choose(item) == "local":
                staging = Path(item.info.staging_path)
                if item.resumed:  # a partial copy of an earlier, interrupted attempt
                    remove_if_present(staging)
                # No fsync here: the librarian fsyncs every staged file before it makes the
                # book visible, and meanwhile the kernel writes back while the run starts.
                return copy_and_hash(
                    item.local, staging, self.client.algorithm, self.progress, fsync=False
                )
            return self._put(item)
        except (ChecksumError, OSError) as error:
            raise LibrarianError(f"cannot upload {item.local}: {error}") from error

    def _put(self, item: UploadItem) -> Checksum:
        body = body_for(item.book, self.client.algorithm, self.progress)
        headers = {"Content-Type": body.media_type}
        if not item.book.is_directory:
            headers["Content-Length"] = str(item.book.size)
        # The answer comes once the server has written and fsynced everything: allow for it.
        timeout = self.client.timeout
        self.client.request(
            "PUT",
            f"/uploads/{item.upload_id}/content",
            content=iter(body),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0), read=None),
        )
        return body.checksum()

    def _check_resumed(self, item: UploadItem) -> None:
        """An earlier attempt committed this upload: go on waiting only if it is our book."""
        assert item.info is not None
        promised = Checksum.parse(item.info.checksum) if item.info.checksum else None
        if promised is not None and hash_path(item.local, promised.algorithm) == promised:
            return
        raise LibrarianError(
            f"{item.name!r} has a pending upload ({item.upload_id}, {item.info.status.value}) "
            "of different content; cancel it first",
            status=409,
        )

    def _commit(self, item: UploadItem, checksum: Checksum) -> None:
        body = UploadCommit(checksum=str(checksum)).model_dump()
        response = self.client.request("POST", f"/uploads/{item.upload_id}/commit", json=body)
        item.info = read_model(response, UploadInfo)
        item.committed = True

    def cancel_quietly(self, item: UploadItem) -> None:
        """Best effort: the caller is already raising the error that matters."""
        if item.info is None or item.committed or item.cancelled:
            return
        item.cancelled = True
        with contextlib.suppress(LibrarianError):
            self.client.cancel_upload(item.upload_id)

    def copy_and_commit(self, item: UploadItem) -> None:
        """Copy and commit one staged item; on any failure cancel it and re-raise."""
        try:
            checksum = self._send(item)
            if checksum is None:
                item.committed = True  # committed by an earlier attempt
            else:
                self._commit(item, checksum)
        except BaseException:
            self.cancel_quietly(item)
            raise

    def wait(
        self, items: Sequence[UploadItem], timeout: float, on_wait: WaitProgress | None = None
    ) -> list[UploadInfo]:
        """Poll until every item is final; raise ``UploadFailed`` for those not stored."""
        pending = {item.upload_id: item for item in items}
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if len(items) == 1:
                latest = [self.client.get_upload(items[0].upload_id)]
            else:
                latest = self.client.get_uploads(list(pending))
            for info in latest:
                item = pending[info.upload_id]
                item.info = info
                if info.status in FINAL_STATUSES:
                    del pending[info.upload_id]
            if on_wait is not None:
                on_wait(len(items) - len(pending), len(items))
            if not pending or time.monotonic() >= deadline:
                break
            # Poll at a tenth of the time waited so far: a book stored after 3 s is seen within
            # 0.3 s of it (a doubling back-off saw it up to a second late), a long wait polls
            # at most once a second.
            elapsed = time.monotonic() - started
            delay = min(MAX_POLL, max(FIRST_POLL, elapsed / 10))
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        failures: list[UploadFailure] = []
        stored: list[UploadInfo] = []
        for item in items:
            assert item.info is not None
            if item.upload_id in pending:
                reason = f"not stored after {timeout:g} s (still {item.info.status.value})"
            elif item.info.status != TransferStatus.STORED:
                reason = one_line(item.info.failure_reason or item.info.status.value)
            else:
                stored.append(item.info)
                continue
            failures.append(UploadFailure(item.name, reason, item.upload_id))
        if failures:
            raise UploadFailed(failures, stored)
        return stored


def upload_one(
    client: LibrarianClient,
    local: Path | str,
    dest: PurePath | str,
    *,
    wait: bool,
    timeout: float,
    progress: Progress | None,
    transfer: Transfer,
) -> UploadInfo:
    """One book; server errors propagate as they are (e.g. 409 for an existing name)."""
    uploader = Uploader(client, transfer, progress)
    item = prepare(local, dest)
    uploader.stage(item)
    uploader.copy_and_commit(item)
    assert item.info is not None
    return uploader.wait([item], timeout)[0] if wait else item.info


def _fails_for_all(error: LibrarianError) -> bool:
    """Errors that would repeat for every book: stop instead of collecting them."""
    return isinstance(error, ConnectionFailed) or error.status in (401, 403)


def upload_many(
    client: LibrarianClient,
    pairs: Sequence[tuple[Path | str, PurePath | str]],
    *,
    wait: bool,
    timeout: float,
    progress: Progress | None,
    transfer: Transfer,
    on_wait: WaitProgress | None,
) -> list[UploadInfo]:
    """Many books, phase by phase; per-book failures are collected and raised at the end."""
    items = [prepare(local, dest) for local, dest in pairs]
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise LibrarianError(f"{item.name!r} is given twice")
        seen.add(item.name)
    uploader = Uploader(client, transfer, progress)
    failures: dict[int, UploadFailure] = {}

    def run_phase(step: Callable[[UploadItem], None]) -> None:
        for index, item in enumerate(items):
            if index in failures:
                continue
            try:
                step(item)
            except LibrarianError as error:
                if _fails_for_all(error):
                    for other in items:
                        uploader.cancel_quietly(other)
                    raise
                upload_id = item.info.upload_id if item.info else None
                failures[index] = UploadFailure(item.name, error.detail, upload_id, error.status)
            except BaseException:  # interrupted: leave nothing staged behind
                for other in items:
                    uploader.cancel_quietly(other)
                raise

    run_phase(uploader.stage)
    run_phase(uploader.copy_and_commit)
    committed = [item for index, item in enumerate(items) if index not in failures]
    if wait and committed:
        try:
            uploader.wait(committed, timeout, on_wait)
        except UploadFailed as error:
            index_of = {item.name: index for index, item in enumerate(items)}
            for failure in error.failures:
                failures[index_of[failure.name]] = failure
    succeeded = [item.info for index, item in enumerate(items) if index not in failures]
    infos = [info for info in succeeded if info is not None]
    if failures:
        raise UploadFailed([failures[index] for index in sorted(failures)], infos)
    return infos
