"""``LibrarianClient``: upload books, search and locate files over the REST API (SPEC §8).

The HTTP plumbing lives here: one kept-alive ``httpx.Client`` with Basic auth, and the
translation of every failure into a one-line ``LibrarianError`` (problem details from the
server, or "cannot reach ..." for connection errors). The upload protocol is in
``client.uploads``, the streaming movers in ``client.transfer``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from librarian_dagster import __version__
from librarian_dagster.client import uploads
from librarian_dagster.client.errors import ConnectionFailed, LibrarianError, read_model
from librarian_dagster.client.settings import ConnectionInfo
from librarian_dagster.client.uploads import Transfer, WaitProgress, as_name
from librarian_dagster.storage.checksums import DEFAULT_ALGORITHM, Progress
from librarian_dagster.wire import (
    API_PREFIX,
    MAX_PAGE,
    AccountInfo,
    CorruptCopy,
    CorruptList,
    FileInfo,
    FileQuery,
    FileSearchResult,
    FileSummary,
    PingResponse,
    Problem,
    UploadInfo,
    UploadList,
    first_problem,
)

DEFAULT_TIMEOUT = 60.0
# Ids per POST /uploads/status request (the server takes up to 10 000).
STATUS_CHUNK = 1000


def _zoned(moment: datetime | None) -> datetime | None:
    """A naive datetime means local time (the server demands a zone)."""
    return moment if moment is None or moment.tzinfo is not None else moment.astimezone()


def file_query(
    name: str | None = None,
    uploader: str | None = None,
    source: str | None = None,
    created_since: datetime | None = None,
    created_until: datetime | None = None,
    *,
    page_size: int = MAX_PAGE,
) -> FileQuery:
    """The search as the server takes it; naive datetimes are taken as local time.

    Bad filters raise ``LibrarianError`` here, before anything is sent.
    """
    try:
        return FileQuery(
            name=name,
            uploader=uploader,
            source=source,
            created_since=_zoned(created_since),
            created_until=_zoned(created_until),
            limit=max(1, min(page_size, MAX_PAGE)),
        )
    except ValidationError as error:
        raise LibrarianError(f"invalid search: {first_problem(error)}") from None


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


# A 429 is retried this often, waiting its Retry-After (capped) in between.
RETRIES_429 = 3
RETRY_429_SECONDS = 30.0


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending again, for a 429 that says so; None otherwise."""
    if response.status_code != 429:
        return None
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), RETRY_429_SECONDS)
    except ValueError:
        return 1.0


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

    def request(
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
        """One API call (``path`` below ``/api/v2``); any failure is a ``LibrarianError``.

        The low-level door for routes without a method here; ``content`` may be an
        iterator, streamed as the request body. A 429 ("too many at once", "too many failed
        logins") is retried after its ``Retry-After`` (at most ``RETRY_429_SECONDS``, up to
        ``RETRIES_429`` times) when the request can be sent again (no streamed body).
        """
        url = f"{self.url}{API_PREFIX}{path}"
        replayable = content is None or isinstance(content, bytes | bytearray)
        for attempt in range(RETRIES_429 + 1):
            response = self._send(method, url, json, params, content, headers, timeout)
            wait = _retry_after(response)
            if wait is None or not replayable or attempt == RETRIES_429:
                break
            time.sleep(wait)
        if response.is_error:
            context = f"; user {self.user!r} at {self.url}" if response.status_code == 401 else ""
            raise _problem_error(response, context)
        return response

    def _send(
        self,
        method: str,
        url: str,
        json: Any,
        params: dict[str, Any] | None,
        content: Iterable[bytes] | None,
        headers: dict[str, str] | None,
        timeout: httpx.Timeout | None,
    ) -> httpx.Response:
        try:
            return self._http.request(
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
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # redirects, bad URLs, decoding
            raise LibrarianError(f"{method} {url} failed: {error}") from error

    # -- simple calls ----------------------------------------------------------------------

    def ping(self) -> PingResponse:
        """The librarian's name, version and health (no credentials needed)."""
        return read_model(self.request("GET", "/ping"), PingResponse)

    def account(self) -> AccountInfo:
        """Who these credentials are on the librarian (any level may ask)."""
        return read_model(self.request("GET", "/account"), AccountInfo)

    def get_upload(self, upload_id: int) -> UploadInfo:
        return read_model(self.request("GET", f"/uploads/{upload_id}"), UploadInfo)

    def get_uploads(self, upload_ids: Sequence[int]) -> list[UploadInfo]:
        """Several uploads' status, in as few requests as the server allows."""
        found: list[UploadInfo] = []
        for start in range(0, len(upload_ids), STATUS_CHUNK):
            chunk = list(upload_ids[start : start + STATUS_CHUNK])
            response = self.request("POST", "/uploads/status", json={"upload_ids": chunk})
            found.extend(read_model(response, UploadList).uploads)
        return found

    def cancel_upload(self, upload_id: int) -> None:
        """Cancel an upload not yet claimed by ingest; its staged data is removed."""
        self.request("DELETE", f"/uploads/{upload_id}")

    def iter_corrupt(
        self, *, include_resolved: bool = False, page_size: int = MAX_PAGE
    ) -> Iterator[CorruptCopy]:
        """Copies found corrupt or missing (admin), oldest first, every page in turn."""
        params: dict[str, str | int] = {
            "include_resolved": str(include_resolved).lower(),
            "limit": page_size,
        }
        while True:
            page = read_model(self.request("GET", "/corrupt", params=params), CorruptList)
            yield from page.corrupt
            if not page.next_cursor:
                return
            params["cursor"] = page.next_cursor

    def dismiss_corrupt(self, record_id: int, note: str) -> CorruptCopy:
        """Close a corrupt-copy record by hand (admin); the copy stays out of service."""
        response = self.request("POST", f"/corrupt/{record_id}/dismiss", json={"note": note})
        return read_model(response, CorruptCopy)

    def get_file(self, name: PurePath | str) -> FileInfo:
        """One file with its instances here and the remote instances other librarians hold."""
        path = quote(as_name(name).lstrip("/"), safe="/")
        return read_model(self.request("GET", f"/files/{path}"), FileInfo)

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
        query = file_query(
            name, uploader, source, created_since, created_until, page_size=page_size
        )
        return self.iter_query(query)

    def iter_query(self, query: FileQuery) -> Iterator[FileSummary]:
        """Every file matching ``query``, ``query.limit`` per page, from its cursor on."""
        while True:
            response = self.request("GET", "/files", params=query.params())
            page = read_model(response, FileSearchResult)
            yield from page.files
            if not page.next_cursor:
                return
            query = query.model_copy(update={"cursor": page.next_cursor})

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

    # -- uploads ---------------------------------------------------------------------------

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
        ``http`` streams through the API, ``auto`` picks ``local`` when the staging
        directory is writable from here. A refused request raises ``LibrarianError`` with
        the server's status (409 for an existing name); a book that ingest refuses raises
        ``UploadFailed`` with the server's reason. Without ``wait`` the returned upload is
        ``staged``: the book is committed but not yet stored.
        """
        return uploads.upload_one(
            self, local, dest, wait=wait, timeout=timeout, progress=progress, transfer=transfer
        )

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
        not stop the others: such failures are raised together at the end as one
        ``UploadFailed`` (``.failures`` says which and why, ``.stored`` what worked).
        Errors that would hit every book (wrong credentials, no permission, server
        unreachable) cancel the uploads not yet committed and are raised at once.
        ``on_wait(done, total)`` reports the wait for ingest. Returns in input order.
        """
        return uploads.upload_many(
            self,
            pairs,
            wait=wait,
            timeout=timeout,
            progress=progress,
            transfer=transfer,
            on_wait=on_wait,
        )
