"""``GlobusMover``: moves batches of books between librarians' Globus collections.

A batch is one Globus transfer task from this site's collection (``[globus] collection_id``)
to the peer's (``endpoint``), one item per book, checksums verified by Globus and again by
the receiving librarian. The mover keeps no state: any process may poll or cancel a task
by its Globus task id alone.

**Lazily.** Building the mover reads no secret and makes no network call (the code
location loads often, and must load with Globus down or the secret unset). At the first
Globus call ``globus_sdk`` is imported, the secret read, a token fetched (client
credentials: ``ConfidentialAppAuthClient`` + ``ClientCredentialsAuthorizer``) and the
``TransferClient`` built. The token is renewed when it expires, and once on a 401.

**Paths.** ``address`` maps a local path to where our collection shows it:
``[globus] path_prefix`` + the path relative to ``[globus] local_root``
(``addressing.collection_path``). Items given to ``submit`` already carry collection paths.

**Retries.** The SDK's own retries are off on the client built here; each call is tried up
to three times (pauses ``retry_delays``, or Globus's ``Retry-After`` if longer) while Globus
is unreachable or answers 429 or 5xx. Submitting again is safe: an accepted submission id
answers code ``Duplicate`` with the first task's id.

**Errors** (``MoverError``: one line with Globus's HTTP status, code, message, request id):

- ``needs_operator=True``, retrying will not help: 401 (client secret refused, credentials
  expired or revoked: fix ``[globus] client_id`` or the secret), 403 (the client may not use
  a collection, or consent is required: grant it on the collection), 404 (no such
  collection or task: check the ids), other 4xx (a request Globus refuses), an unreadable
  or empty secret, a local path outside ``local_root`` (the collection does not show it),
  a submit without a destination collection.
- ``needs_operator=False``: Globus unreachable or overloaded after three attempts; the next
  run or poll tries again.

**Reports.** ACTIVE → active; INACTIVE (suspended, typically expired credentials) or
paused by a collection administrator → stalled; SUCCEEDED → succeeded; FAILED → failed,
or cancelled when its owner cancelled it (Globus fails it with ``CANCELED``; a cancel by a
collection's administrator is a failure). ``fault`` is Globus's own words;
``bytes_moved`` its ``bytes_transferred``. See ``status`` for the items.
"""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from librarian_dagster.storage.errors import PathEscapeError
from librarian_dagster.storage.movers.addressing import collection_path
from librarian_dagster.storage.movers.protocol import (
    ItemResult,
    MoveItem,
    MoverError,
    TaskReport,
    TaskStatus,
)

if TYPE_CHECKING:
    import globus_sdk

T = TypeVar("T")

APP_NAME = "librarian-dagster"
LABEL_MAX = 128  # Globus refuses longer labels
SYNC_LEVELS = ("exists", "size", "mtime", "checksum")
TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 30.0  # seconds; a longer ask is left to the next run or poll
CANCELED = frozenset({"CANCELED", "CANCELLED"})
FINISHED_CODES = frozenset({"TaskComplete"})  # cancel of a task already over
PAUSED = "paused by a collection administrator's pause rule"
SUSPENDED = "Globus suspended the task (INACTIVE); it will not continue without an operator"


class GlobusMover:
    """Sends batches of books as Globus transfer tasks from this site's collection."""

    name = "globus"
    #: Pauses between the attempts of one call (three attempts); tests set ``sleep``.
    retry_delays: tuple[float, ...] = (1.0, 4.0)

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: Callable[[], str],
        collection_id: str,
        path_prefix: str = "/",
        local_root: Path | str = "/",
        sync_level: str | None = None,
        transfer_client: globus_sdk.TransferClient | None = None,
    ) -> None:
        if sync_level is not None and sync_level not in SYNC_LEVELS:
            raise ValueError(f"sync_level must be one of {', '.join(SYNC_LEVELS)} or None")
        self.client_id = client_id
        self.collection_id = collection_id
        self.path_prefix = path_prefix
        self.local_root = Path(local_root)
        self.sync_level = sync_level
        self.sleep: Callable[[float], None] = time.sleep
        self._client_secret = client_secret
        self._client = transfer_client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GlobusMover(collection_id={self.collection_id!r})"

    def address(self, path: Path | str) -> str:
        """``path`` (local) as our collection shows it; outside ``local_root``: ``MoverError``."""
        try:
            return collection_path(path, local_root=self.local_root, path_prefix=self.path_prefix)
        except PathEscapeError as err:
            raise MoverError(
                f"Globus collection {self.collection_id} cannot address it: {err}",
                needs_operator=True,
            ) from err

    def new_submission_id(self) -> str:
        return str(self._call("submission id", lambda client: client.get_submission_id()["value"]))

    def submit(
        self,
        items: Sequence[MoveItem],
        *,
        label: str,
        submission_id: str,
        endpoint: str | None = None,
    ) -> str:
        """One transfer task for ``items`` to collection ``endpoint``; returns its task id."""
        if not items:
            raise MoverError(f"{label}: nothing to move")
        if not endpoint:
            raise MoverError(
                f"{label}: Globus needs the destination collection id of the peer",
                needs_operator=True,
            )
        import globus_sdk

        options: dict[str, Any] = {"submission_id": submission_id, "verify_checksum": True}
        if clean := clean_label(label):
            options["label"] = clean
        if self.sync_level is not None:
            options["sync_level"] = self.sync_level
        data = globus_sdk.TransferData(self.collection_id, endpoint, **options)
        for item in items:
            data.add_item(item.source, item.destination, recursive=item.recursive)

        def send(client: globus_sdk.TransferClient) -> dict[str, Any]:
            try:
                return dict(client.submit_transfer(data).data)  # code Accepted or Duplicate
            except globus_sdk.GlobusAPIError as err:
                body = err.raw_json if isinstance(err.raw_json, dict) else {}
                if err.code == "Duplicate" and body.get("task_id"):
                    return body
                raise

        task_id = self._call("submit", send).get("task_id")
        if not task_id:
            raise MoverError(f"Globus accepted {label!r} but named no task")
        return str(task_id)

    def status(self, task_id: str) -> TaskReport:
        """Where task ``task_id`` is, from Globus alone.

        The mover keeps no record of what it submitted, and Globus does not give a task's
        items back; a report names the files Globus lists as transferred (once the task is
        over: succeeded, failed or cancelled), each ``done``. Callers match
        ``ItemResult.item.destination`` to the destinations they submitted, a directory
        book by the files under it: ``protocol.match_results`` does it. A succeeded task delivered
        every item, listed or not (Globus lists neither directories nor files a sync
        skipped).
        """
        path_id = _task_path_id(task_id)
        task = self._call("status", lambda client: dict(client.get_task(path_id).data))
        moved = int(task.get("bytes_transferred") or 0)
        state = task.get("status")
        if state == "ACTIVE" and not task.get("is_paused"):
            return TaskReport(task_id, TaskStatus.ACTIVE, bytes_moved=moved)
        if state in ("ACTIVE", "INACTIVE"):  # paused by an administrator, or suspended
            fault = _globus_words(task, PAUSED if state == "ACTIVE" else SUSPENDED)
            return TaskReport(task_id, TaskStatus.STALLED, fault=fault, bytes_moved=moved)
        if state not in ("SUCCEEDED", "FAILED"):
            raise MoverError(
                f"Globus answered status {state!r} for task {task_id}, unknown here",
                needs_operator=True,
            )
        items = () if task.get("history_deleted") else self._transferred(path_id)
        if state == "SUCCEEDED":
            return TaskReport(task_id, TaskStatus.SUCCEEDED, items, bytes_moved=moved)
        status, fault = _failure(task)
        return TaskReport(task_id, status, items, fault=fault, bytes_moved=moved)

    def cancel(self, task_id: str) -> None:
        """Cancel the task; a task already over is left as it is."""
        path_id = _task_path_id(task_id)

        def send(client: globus_sdk.TransferClient) -> None:
            import globus_sdk

            try:
                client.cancel_task(path_id)  # Canceled, CancelAccepted or TaskComplete
            except globus_sdk.GlobusAPIError as err:
                if err.code not in FINISHED_CODES:
                    raise

        self._call("cancel", send)

    # -- helpers -----------------------------------------------------------------------

    def _transferred(self, task_id: str) -> tuple[ItemResult, ...]:
        def listing(client: globus_sdk.TransferClient) -> tuple[ItemResult, ...]:
            entries = client.paginated.task_successful_transfers(task_id).items()
            return tuple(
                ItemResult(MoveItem(str(e["source_path"]), str(e["destination_path"])), True)
                for e in entries
            )

        return self._call("listing of transferred files", listing)

    def _call(self, doing: str, action: Callable[[globus_sdk.TransferClient], T]) -> T:
        """``action`` on the client, retried while Globus is unreachable or overloaded."""
        import globus_sdk

        failures = 0
        renewed = False
        while True:
            try:
                return action(self._transfer_client())
            except globus_sdk.GlobusAPIError as err:
                if err.http_status == 401 and not renewed and self._renew():
                    renewed = True  # a fresh token, once
                    continue
                if err.http_status not in TRANSIENT_HTTP:
                    raise _api_error(doing, err, failures + 1) from err
                failure: Exception = err
                asked = _retry_after(err)
            except globus_sdk.NetworkError as err:
                failure, asked = err, 0.0
            failures += 1
            if failures > len(self.retry_delays):
                if isinstance(failure, globus_sdk.GlobusAPIError):
                    raise _api_error(doing, failure, failures) from failure
                reason = _one_line(f"{failure}: {getattr(failure, 'underlying_exception', '')}")
                raise MoverError(
                    f"Globus {doing} failed after {failures} attempts: cannot reach Globus"
                    f" ({reason})"
                ) from failure
            self.sleep(max(self.retry_delays[failures - 1], asked))

    def _transfer_client(self) -> globus_sdk.TransferClient:
        with self._lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> globus_sdk.TransferClient:
        """Client credentials: fetches a token now (at the first call, never at load)."""
        import globus_sdk
        from globus_sdk.transport import RetryConfig

        auth = globus_sdk.ConfidentialAppAuthClient(
            self.client_id,
            self._read_secret(),
            app_name=APP_NAME,
            retry_config=RetryConfig(max_retries=0),
        )
        authorizer = globus_sdk.ClientCredentialsAuthorizer(
            auth, scopes=globus_sdk.TransferClient.scopes.all
        )
        return globus_sdk.TransferClient(
            authorizer=authorizer, app_name=APP_NAME, retry_config=RetryConfig(max_retries=0)
        )

    def _read_secret(self) -> str:
        try:
            secret = self._client_secret()
        except MoverError:
            raise
        except Exception as err:
            raise MoverError(
                f"cannot read the Globus client secret: {type(err).__name__}: {err}",
                needs_operator=True,
            ) from err
        if not secret:
            raise MoverError("the Globus client secret is empty", needs_operator=True)
        return secret

    def _renew(self) -> bool:
        """Drop the token after a 401 if the authorizer can fetch another."""
        authorizer = getattr(self._client, "authorizer", None)
        return authorizer is not None and bool(authorizer.handle_missing_authorization())


def clean_label(label: str) -> str:
    """``label`` as Globus takes it: no control characters or line breaks, no surrounding
    or repeated whitespace, at most 128 characters."""
    visible = "".join(
        (" " if char.isspace() else "") if unicodedata.category(char).startswith("C") else char
        for char in label
    )
    return " ".join(visible.split())[:LABEL_MAX].rstrip()


def _task_path_id(task_id: str) -> str:
    """A Globus task id is a UUID; anything else is refused before it reaches a URL."""
    try:
        return str(uuid.UUID(str(task_id)))
    except ValueError:
        raise MoverError(f"no Globus task {str(task_id)[:80]!r}", needs_operator=True) from None


def _globus_words(task: dict[str, Any], summary: str = "") -> str:
    """What Globus says about a task's trouble, as it says it (after ``summary``)."""
    fatal = task.get("fatal_error") if isinstance(task.get("fatal_error"), dict) else {}
    words = [": ".join(str(part) for part in (fatal.get("code"), fatal.get("description")) if part)]
    for key in ("nice_status", "nice_status_short_description", "nice_status_details"):
        if (value := task.get(key)) and str(value) not in words:
            words.append(str(value))
    said = "; ".join(word for word in words if word)
    return f"{summary}: {said}" if summary and said else summary or said


def _failure(task: dict[str, Any]) -> tuple[TaskStatus, str]:
    fatal = task.get("fatal_error") if isinstance(task.get("fatal_error"), dict) else {}
    if admin := task.get("canceled_by_admin"):
        summary = f"cancelled by an administrator of the {str(admin).lower()} collection"
        if message := task.get("canceled_by_admin_message"):
            summary = f"{summary}: {message}"
        return TaskStatus.FAILED, _globus_words(task, summary)
    words = _globus_words(task)
    if {str(fatal.get("code")).upper(), str(task.get("nice_status")).upper()} & CANCELED:
        return TaskStatus.CANCELLED, words or "CANCELED"
    return TaskStatus.FAILED, words or "Globus reports the task FAILED and gives no reason"


def _api_error(doing: str, err: globus_sdk.GlobusAPIError, attempts: int) -> MoverError:
    body = err.raw_json if isinstance(err.raw_json, dict) else {}
    code = err.code or body.get("error") or "no code"  # OAuth errors (Globus Auth) say "error"
    message = err.message or body.get("error_description") or err.http_reason
    request = f" (request id {err.request_id})" if err.request_id else ""
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    line = f"Globus {doing} failed{tried}: HTTP {err.http_status} {code}: {message}{request}"
    operator = 400 <= err.http_status < 500 and err.http_status not in (408, 429)
    return MoverError(_one_line(line), needs_operator=operator)


def _retry_after(err: globus_sdk.GlobusAPIError) -> float:
    asked = err.headers.get("Retry-After", "")
    return min(float(asked), RETRY_AFTER_MAX) if asked.isdigit() else 0.0  # not a date


def _one_line(text: str, limit: int = 600) -> str:
    return " ".join(text.split())[:limit]
