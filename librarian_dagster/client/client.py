"""``LibrarianClient``: upload books, search and locate files over the REST API (SPEC §8).

An upload is stage → copy → commit → wait:

1. ``POST /uploads {name, size}`` (no checksum: it is computed while copying, so the book is
   read once);
2. bytes go into the staging directory, either by a shared-filesystem copy
   (``copy_and_hash``) or streamed with ``PUT /uploads/{id}/content`` (a file, or a tar
   stream generated on the fly), hashing on the way;
3. ``POST /uploads/{id}/commit {checksum}``; the librarian verifies the staged bytes
   against that checksum during ingest, so the check is end to end;
4. poll until the upload is ``stored`` (return) or ``failed``/``cancelled`` (raise
   ``UploadFailed`` with the server's reason).

Anything that goes wrong between staging and commit cancels the upload (``DELETE``), so no
half-copied staging directory is left promised to a name. ``upload_many`` runs each phase
for all books before the next (stage all, copy all, commit all, wait once with
``POST /uploads/status``): committing together lets the librarian ingest them in one run.

Every failure a caller can act on is a ``LibrarianError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import httpx

from librarian_dagster import __version__
from librarian_dagster.api.schemas import (
    API_PREFIX,
    MAX_PAGE,
    FileInfo,
    FileSearchResult,
    FileSummary,
    PingResponse,
    Problem,
    UploadCommit,
    UploadCreate,
    UploadInfo,
)
from librarian_dagster.catalogue.models import TransferStatus
from librarian_dagster.client.errors import (
    ConnectionFailed,
    LibrarianError,
    UploadFailed,
    UploadFailure,
    one_line,
)
from librarian_dagster.client.settings import ConnectionInfo
from librarian_dagster.client.transfer import LocalBook, body_for, scan_book
from librarian_dagster.storage.checksums import (
    DEFAULT_ALGORITHM,
    Checksum,
    ChecksumError,
    copy_and_hash,
    hash_path,
)
from librarian_dagster.storage.names import InvalidNameError, validate_name

Transfer = Literal["auto", "local", "http"]
Progress = Callable[[int], None]
WaitProgress = Callable[[int, int], None]

DEFAULT_TIMEOUT = 60.0
FIRST_POLL = 0.05
MAX_POLL = 1.0
# Ids per POST /uploads/status request (the server takes up to 10 000).
STATUS_CHUNK = 1000
_FINAL = frozenset({TransferStatus.STORED, TransferStatus.FAILED, TransferStatus.CANCELLED})


@dataclass
class _Item:
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


def _backoff(delay: float) -> float:
    return min(delay * 1.5, MAX_POLL)


def _as_name(dest: PurePath | str) -> str:
    return dest.as_posix() if isinstance(dest, PurePath) else dest


def _timestamp(moment: datetime) -> str:
    """ISO 8601 with a zone; a naive datetime means local time (the server demands a zone)."""
    return (moment if moment.tzinfo is not None else moment.astimezone()).isoformat()


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _remove(path: Path) -> None:
    """Remove a partial copy left by an earlier, interrupted attempt of the same upload."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _problem_error(response: httpx.Response, context: str = "") -> LibrarianError:
    """A one-line LibrarianError from an error response (problem+json or anything else)."""
    problem: Problem | None = None
    extra = ""
    try:
        body: Any = response.json()
        problem = Problem.model_validate(body)
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors:
            extra = "; " + "; ".join(
                f"{error.get('key', '?')}: {error.get('message', '?')}"
                for error in errors[:3]
                if isinstance(error, dict)
            )
    except ValueError:  # not JSON, or not a problem: fall back to the raw text
        problem = None
    status = response.status_code
    title = problem.title if problem else response.reason_phrase
    detail = (problem.detail if problem else None) or response.text[:200] or title
    return LibrarianError(
        f"{detail}{extra} ({status} {title}{context})", status=status, problem=problem
    )


class LibrarianClient:
    """A connection to one librarian's API, as one user (HTTP Basic, kept-alive connections).

    ``transport`` (e.g. ``httpx.MockTransport``) is used by the client's own
    ``httpx.Client``; ``http_client`` replaces that client altogether (e.g. Litestar's
    ``TestClient``), in which case the caller owns and closes it. Requests go to ``url``
    plus the API prefix; the server's ``public_url`` (in upload URLs) is not used, because
    the client already knows an address that reaches the server from where it runs.
    """

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        algorithm: str = DEFAULT_ALGORITHM,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.algorithm = algorithm
        self.timeout = timeout
        self._auth = httpx.BasicAuth(user, password)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            headers={"User-Agent": f"librarian-client/{__version__}"},
        )

    @classmethod
    def from_info(cls, info: ConnectionInfo, **kwargs: Any) -> Self:
        """A client for a configured connection (password resolved from its env var now)."""
        return cls(info.url, info.user, info.resolve_password(), **kwargs)

    def __repr__(self) -> str:
        return f"LibrarianClient({self.url!r}, user={self.user!r})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        url = f"{self.url}{API_PREFIX}{path}"
        try:
            response = self._http.request(
                method,
                url,
                json=json,
                params=params,
                content=content,
                headers=headers,
                auth=self._auth,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as error:
            raise ConnectionFailed(f"{method} {url} timed out ({type(error).__name__})") from error
        except httpx.TransportError as error:
            raise ConnectionFailed(
                f"cannot reach {self.url}: {error or type(error).__name__}"
            ) from error
        if response.is_error:
            context = f"; user {self.user!r} at {self.url}" if response.status_code == 401 else ""
            raise _problem_error(response, context)
        return response

    # -- simple calls ----------------------------------------------------------------------

    def ping(self) -> PingResponse:
        """The librarian's name, version and health (no credentials needed)."""
        return PingResponse.model_validate(self._request("GET", "/ping").json())

    def get_upload(self, upload_id: int) -> UploadInfo:
        return UploadInfo.model_validate(self._request("GET", f"/uploads/{upload_id}").json())

    def get_uploads(self, upload_ids: Sequence[int]) -> list[UploadInfo]:
        """Several uploads' status, in as few requests as the server allows."""
        found: list[UploadInfo] = []
        for start in range(0, len(upload_ids), STATUS_CHUNK):
            chunk = list(upload_ids[start : start + STATUS_CHUNK])
            body = self._request("POST", "/uploads/status", json={"upload_ids": chunk}).json()
            found.extend(UploadInfo.model_validate(item) for item in body["uploads"])
        return found

    def cancel_upload(self, upload_id: int) -> None:
        """Cancel an upload not yet claimed by ingest; its staged data is removed."""
        self._request("DELETE", f"/uploads/{upload_id}")

    def get_file(self, name: PurePath | str) -> FileInfo:
        """One file with its instances here and the remote instances other librarians hold."""
        path = quote(_as_name(name).lstrip("/"), safe="/")
        return FileInfo.model_validate(self._request("GET", f"/files/{path}").json())

    def iter_files(
        self,
        name: str | None = None,
        uploader: str | None = None,
        source: str | None = None,
        created_since: datetime | None = None,
        created_until: datetime | None = None,
        *,
        page_size: int = MAX_PAGE,
    ) -> Iterator[FileSummary]:
        """Every matching file, fetching pages (following ``next_cursor``) as you iterate.

        ``name`` is a glob (``*``, ``?``); naive datetimes are taken as local time.
        """
        params: dict[str, Any] = {
            key: value
            for key, value in (("name", name), ("uploader", uploader), ("source", source))
            if value
        }
        if created_since is not None:
            params["created_since"] = _timestamp(created_since)
        if created_until is not None:
            params["created_until"] = _timestamp(created_until)
        params["limit"] = max(1, min(page_size, MAX_PAGE))
        while True:
            page = FileSearchResult.model_validate(
                self._request("GET", "/files", params=params).json()
            )
            yield from page.files
            if not page.next_cursor:
                return
            params["cursor"] = page.next_cursor

    def search_files(
        self,
        name: str | None = None,
        uploader: str | None = None,
        source: str | None = None,
        created_since: datetime | None = None,
        created_until: datetime | None = None,
        limit: int = 100,
        *,
        page_size: int = MAX_PAGE,
    ) -> list[FileSummary]:
        """Up to ``limit`` matching files in catalogue order (several pages if need be)."""
        if limit < 1:
            return []
        files = self.iter_files(
            name, uploader, source, created_since, created_until, page_size=min(page_size, limit)
        )
        return list(itertools.islice(files, limit))

    # -- uploads: the steps ----------------------------------------------------------------

    def _prepare(self, local: Path | str, dest: PurePath | str) -> _Item:
        """Check the name and scan the local book: refuse bad input before staging anything."""
        local = Path(local)
        name = _as_name(dest)
        try:
            validate_name(name)
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
        return _Item(local, name, book)

    def _stage(self, item: _Item) -> None:
        body = UploadCreate(name=item.name, size=item.book.size)
        response = self._request("POST", "/uploads", json=body.model_dump(exclude_none=True))
        item.info = UploadInfo.model_validate(response.json())
        item.resumed = response.status_code == 200

    def _choose_transfer(self, item: _Item, transfer: Transfer) -> Literal["local", "http"]:
        """``local`` when the staging directory is reachable and writable from here.

        The staging directory's name is a fresh UUID, so finding it here means this host
        mounts the store's filesystem; otherwise the bytes go over HTTP.
        """
        assert item.info is not None
        if transfer == "http":
            return "http"
        reachable = _writable_dir(Path(item.info.staging_path).parent)
        if transfer == "local" and not reachable:
            raise LibrarianError(
                f"staging directory {Path(item.info.staging_path).parent} is not writable "
                "from here; use the http transfer"
            )
        return "local" if reachable else "http"

    def _send(self, item: _Item, transfer: Transfer, progress: Progress | None) -> Checksum | None:
        """Put the bytes into staging, hashing them on the way; None if already committed."""
        assert item.info is not None
        if item.resumed and item.info.status != TransferStatus.INITIATED:
            return self._check_resumed(item)
        try:
            if self._choose_transfer(item, transfer) == "local":
                staging = Path(item.info.staging_path)
                if item.resumed:
                    _remove(staging)
                return copy_and_hash(item.local, staging, self.algorithm, progress)
            return self._put(item, progress)
        except ChecksumError as error:
            raise LibrarianError(f"cannot upload {item.local}: {error}") from error
        except OSError as error:
            raise LibrarianError(f"cannot upload {item.local}: {error}") from error

    def _put(self, item: _Item, progress: Progress | None) -> Checksum:
        body = body_for(item.book, self.algorithm, progress)
        headers = {"Content-Type": body.media_type}
        if not item.book.is_directory:
            headers["Content-Length"] = str(item.book.size)
        # The answer comes once the server has written and fsynced everything: allow for it.
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0), read=None)
        self._request(
            "PUT",
            f"/uploads/{item.upload_id}/content",
            content=iter(body),
            headers=headers,
            timeout=timeout,
        )
        return body.checksum()

    def _check_resumed(self, item: _Item) -> None:
        """An earlier attempt committed this upload: go on waiting only if it is our book."""
        assert item.info is not None
        promised = Checksum.parse(item.info.checksum) if item.info.checksum else None
        if promised is not None and hash_path(item.local, promised.algorithm) == promised:
            return None
        raise LibrarianError(
            f"{item.name!r} has a pending upload ({item.upload_id}, {item.info.status.value}) "
            "of different content; cancel it first",
            status=409,
        )

    def _commit(self, item: _Item, checksum: Checksum) -> None:
        body = UploadCommit(checksum=str(checksum)).model_dump()
        response = self._request("POST", f"/uploads/{item.upload_id}/commit", json=body)
        item.info = UploadInfo.model_validate(response.json())
        item.committed = True

    def _cancel_quietly(self, item: _Item) -> None:
        """Best effort: the caller is already raising the error that matters."""
        if item.info is None or item.committed or item.cancelled:
            return
        item.cancelled = True
        with contextlib.suppress(LibrarianError):
            self.cancel_upload(item.upload_id)

    def _transfer_one(self, item: _Item, transfer: Transfer, progress: Progress | None) -> None:
        """Copy and commit one staged item; on any failure cancel it and re-raise."""
        try:
            checksum = self._send(item, transfer, progress)
            if checksum is None:
                item.committed = True  # committed by an earlier attempt
            else:
                self._commit(item, checksum)
        except BaseException:
            self._cancel_quietly(item)
            raise

    # -- uploads: public -------------------------------------------------------------------

    def upload(
        self,
        local: Path | str,
        dest: PurePath | str,
        *,
        wait: bool = True,
        timeout: float = 3600.0,
        progress: Progress | None = None,
        transfer: Transfer = "auto",
    ) -> UploadInfo:
        """Upload one book (file or directory) as ``dest``; by default wait until stored.

        ``progress`` is called with byte counts as the book is read (hashed and copied).
        ``transfer``: ``local`` copies into the staging directory on a shared filesystem,
        ``http`` streams through the API, ``auto`` picks ``local`` when it can. Raises
        ``UploadFailed`` with the server's reason if ingest refuses the book.
        """
        item = self._prepare(local, dest)
        self._stage(item)
        self._transfer_one(item, transfer, progress)
        assert item.info is not None
        if not wait:
            return item.info
        return self._wait([item], timeout, None)[0]

    def upload_many(
        self,
        pairs: Sequence[tuple[Path | str, PurePath | str]],
        *,
        wait: bool = True,
        timeout: float = 3600.0,
        progress: Progress | None = None,
        transfer: Transfer = "auto",
        on_wait: WaitProgress | None = None,
    ) -> list[UploadInfo]:
        """Upload many (local, dest) books: stage all, copy all, commit all, then wait once.

        Local problems (missing paths, symlinks, invalid or repeated names) are refused
        before anything is staged. A book the server refuses (say, a name that exists) does
        not stop the others; all such failures are raised together at the end as one
        ``UploadFailed`` (with ``.failures`` and ``.stored``). Errors that would hit every
        book (wrong credentials, no permission, server unreachable) cancel the uploads not yet
        committed and are raised at once. ``on_wait(done, total)`` reports the wait.
        """
        items = [self._prepare(local, dest) for local, dest in pairs]
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise LibrarianError(f"{item.name!r} is given twice")
            seen.add(item.name)
        failures: dict[int, UploadFailure] = {}

        def run_phase(step: Callable[[_Item], None]) -> None:
            for index, item in enumerate(items):
                if index in failures:
                    continue
                try:
                    step(item)
                except LibrarianError as error:
                    if isinstance(error, ConnectionFailed) or error.status in (401, 403):
                        self._cancel_all(items)  # it would fail for every book
                        raise
                    info = item.info
                    failures[index] = UploadFailure(
                        item.name, error.detail, info.upload_id if info else None, error.status
                    )
                except BaseException:
                    self._cancel_all(items)
                    raise

        run_phase(self._stage)
        run_phase(lambda item: self._transfer_one(item, transfer, progress))
        done = [item for index, item in enumerate(items) if index not in failures]
        if wait and done:
            try:
                self._wait(done, timeout, on_wait)
            except UploadFailed as error:
                by_name = {item.name: index for index, item in enumerate(items)}
                for failure in error.failures:
                    failures[by_name[failure.name]] = failure
        stored = [item.info for index, item in enumerate(items) if index not in failures]
        if failures:
            raise UploadFailed(
                [failures[index] for index in sorted(failures)],
                [info for info in stored if info is not None],
            )
        return [info for info in stored if info is not None]

    def _cancel_all(self, items: Sequence[_Item]) -> None:
        for item in items:
            self._cancel_quietly(item)

    def _wait(
        self, items: Sequence[_Item], timeout: float, on_wait: WaitProgress | None
    ) -> list[UploadInfo]:
        """Poll until every item is final (backing off to 1 s); raise for the ones not stored."""
        pending = {item.upload_id: item for item in items}
        deadline = time.monotonic() + timeout
        delay = FIRST_POLL
        while True:
            if len(pending) == 1:
                (only,) = pending
                latest = [self.get_upload(only)]
            else:
                latest = self.get_uploads(list(pending))
            for info in latest:
                if info.status in _FINAL:
                    pending.pop(info.upload_id).info = info
                else:
                    pending[info.upload_id].info = info
            if on_wait is not None:
                on_wait(len(items) - len(pending), len(items))
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = _backoff(delay)
        failures = []
        for item in items:
            assert item.info is not None
            if item.upload_id in pending:
                reason = f"not stored after {timeout:g} s (still {item.info.status.value})"
            elif item.info.status != TransferStatus.STORED:
                reason = one_line(item.info.failure_reason or item.info.status.value)
            else:
                continue
            failures.append(UploadFailure(item.name, reason, item.upload_id))
        if failures:
            stored = [item.info for item in items if item.info and item.upload_id not in pending]
            raise UploadFailed(failures, [i for i in stored if i.status == TransferStatus.STORED])
        return [item.info for item in items if item.info is not None]
