"""``GlobusMover`` against Globus as ``globus_sdk.testing`` and ``responses`` fake it.

No test reaches the network: ``responses`` answers every request (an unregistered one is a
connection error), and each test asserts what was sent as well as what came back.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import globus_sdk
import pytest
import requests
import responses
from globus_sdk.testing import RegisteredResponse, get_last_request, load_response
from globus_sdk.transport import RetryConfig
from responses import matchers

from librarian_dagster.storage.errors import PathEscapeError
from librarian_dagster.storage.movers.globus import GlobusMover, clean_label
from librarian_dagster.storage.movers.protocol import (
    ItemResult,
    MoveItem,
    Mover,
    MoverError,
    TaskReport,
    TaskStatus,
    match_results,
)

OURS = str(uuid.uuid4())  # this site's collection
PEER = str(uuid.uuid4())  # the peer's collection
TASK = str(uuid.uuid4())
SUBMISSION = str(uuid.uuid4())
CLIENT_ID = str(uuid.uuid4())
TRANSFER = "https://transfer.api.globus.org/v0.10"
TOKEN = "DUMMY_TRANSFER_TOKEN_FROM_THE_INTERTUBES"  # globus_sdk.testing's client-credentials token

FILE = MoveItem("/data/store/a.h5", "/staging/s1/a.h5", checksum="blake3:aa")
DIRECTORY = MoveItem("/data/store/run7", "/staging/s1/run7", recursive=True)
OTHER = MoveItem("/data/store/c.h5", "/staging/s1/c.h5")


@pytest.fixture(autouse=True)
def mocked_globus() -> Iterator[None]:
    responses.start()
    try:
        yield
    finally:
        responses.stop()
        responses.reset()


@pytest.fixture
def slept() -> list[float]:
    return []


def never_read() -> str:
    raise AssertionError("the client secret was read although a client was given")


def make_mover(slept: list[float], **options: Any) -> GlobusMover:
    client = globus_sdk.TransferClient(
        authorizer=globus_sdk.NullAuthorizer(), retry_config=RetryConfig(max_retries=0)
    )
    mover = GlobusMover(
        client_id=CLIENT_ID,
        client_secret=never_read,
        collection_id=OURS,
        transfer_client=client,
        **options,
    )
    mover.sleep = slept.append
    return mover


@pytest.fixture
def mover(slept: list[float]) -> GlobusMover:
    return make_mover(slept)


def calls_to(path: str, method: str | None = None) -> list[Any]:
    return [
        call
        for call in responses.calls
        if urlparse(call.request.url).path == path and method in (None, call.request.method)
    ]


def body_of(request: Any) -> dict[str, Any]:
    return dict(json.loads(request.body))


def accepted(task_id: str = TASK, code: str = "Accepted") -> RegisteredResponse:
    return RegisteredResponse(
        service="transfer",
        method="POST",
        path="/v0.10/transfer",
        status=202 if code == "Accepted" else 200,
        json={"DATA_TYPE": "transfer_result", "code": code, "task_id": task_id},
    )


def refused(status: int, code: str, message: str, path: str = "/v0.10/transfer") -> None:
    load_response(
        RegisteredResponse(
            service="transfer",
            method="POST" if path.endswith(("/transfer", "/cancel")) else "GET",
            path=path,
            status=status,
            json={"code": code, "message": message, "request_id": "req42"},
        )
    )


def task_doc(status: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "DATA_TYPE": "task",
        "task_id": TASK,
        "type": "TRANSFER",
        "status": status,
        "bytes_transferred": 0,
        "fatal_error": None,
        "nice_status": None,
        "nice_status_details": None,
        "nice_status_short_description": None,
        "is_paused": False,
        "canceled_by_admin": None,
        "canceled_by_admin_message": None,
        "history_deleted": False,
    }
    doc.update(fields)
    return doc


def globus_task(status: str, **fields: Any) -> None:
    load_response(
        RegisteredResponse(
            service="transfer", path=f"/v0.10/task/{TASK}", json=task_doc(status, **fields)
        )
    )


def transferred(*pairs: tuple[str, str], marker: str | None = None, after: str | None = None):
    """One page of successful transfers; ``after`` is the marker this page is asked with."""
    load_response(
        RegisteredResponse(
            service="transfer",
            path=f"/v0.10/task/{TASK}/successful_transfers",
            json={
                "DATA_TYPE": "successful_transfers",
                "marker": after,
                "next_marker": marker,
                "DATA": [
                    {"DATA_TYPE": "successful_transfer", "source_path": s, "destination_path": d}
                    for s, d in pairs
                ],
            },
            match=[matchers.query_param_matcher({"marker": after} if after else {})],
        )
    )


# -- submit ------------------------------------------------------------------------------


def test_submit_sends_one_task_with_every_book_and_returns_its_id(slept: list[float]) -> None:
    mover = make_mover(slept, sync_level="checksum")
    load_response(accepted())
    label = "clone 12 → peer\r\nsecond line\t" + "x" * 200

    task_id = mover.submit([FILE, DIRECTORY], label=label, submission_id=SUBMISSION, endpoint=PEER)

    assert task_id == TASK
    assert len(responses.calls) == 1
    body = body_of(get_last_request())
    assert body["DATA_TYPE"] == "transfer"
    assert body["source_endpoint"] == OURS and body["destination_endpoint"] == PEER
    assert body["submission_id"] == SUBMISSION
    assert body["verify_checksum"] is True
    assert body["sync_level"] == 3  # the SDK sends levels as numbers: checksum is 3
    assert body["label"] == ("clone 12 → peer second line " + "x" * 200)[:128]
    assert [
        (item["DATA_TYPE"], item["source_path"], item["destination_path"], item["recursive"])
        for item in body["DATA"]
    ] == [
        ("transfer_item", "/data/store/a.h5", "/staging/s1/a.h5", False),
        ("transfer_item", "/data/store/run7", "/staging/s1/run7", True),
    ]


def test_submit_without_sync_level_sends_none(mover: GlobusMover) -> None:
    load_response(accepted())
    mover.submit([FILE], label="one", submission_id=SUBMISSION, endpoint=PEER)
    body = body_of(get_last_request())
    assert "sync_level" not in body and body["label"] == "one"


def test_labels_are_cut_to_what_globus_accepts() -> None:
    assert clean_label("  a\tb\nc\u200bd \x00e  ") == "a b cd e"
    assert len(clean_label("é" * 300)) == 128
    assert clean_label(" " * 10 + "y" * 127 + " z") == "y" * 127  # no trailing space
    assert clean_label("\n\r\t") == ""


def test_a_label_of_nothing_but_control_characters_is_left_out(mover: GlobusMover) -> None:
    load_response(accepted())
    mover.submit([FILE], label="\r\n", submission_id=SUBMISSION, endpoint=PEER)
    assert "label" not in body_of(get_last_request())


def test_submit_without_items_or_destination_sends_nothing(mover: GlobusMover) -> None:
    with pytest.raises(MoverError, match="nothing to move") as empty:
        mover.submit([], label="b", submission_id=SUBMISSION, endpoint=PEER)
    with pytest.raises(MoverError, match="destination collection") as nowhere:
        mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=None)
    assert not empty.value.needs_operator and nowhere.value.needs_operator
    assert len(responses.calls) == 0


@pytest.mark.parametrize("code", ["Duplicate", "Accepted"])
def test_a_repeated_submission_id_returns_the_first_task(mover: GlobusMover, code: str) -> None:
    load_response(accepted(TASK))
    load_response(accepted(TASK, code="Duplicate"))
    first = mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)
    again = mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)
    assert first == again == TASK
    sent = [body_of(call.request)["submission_id"] for call in calls_to("/v0.10/transfer")]
    assert sent == [SUBMISSION, SUBMISSION]


def test_a_duplicate_answered_as_an_error_still_names_the_task(mover: GlobusMover) -> None:
    load_response(
        RegisteredResponse(
            service="transfer",
            method="POST",
            path="/v0.10/transfer",
            status=409,
            json={"code": "Duplicate", "message": "already submitted", "task_id": TASK},
        )
    )
    assert mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER) == TASK


def test_new_submission_id_asks_globus(mover: GlobusMover) -> None:
    fixture = load_response("transfer.get_submission_id")
    assert mover.new_submission_id() == fixture.metadata["submission_id"]
    assert urlparse(get_last_request().url).path == "/v0.10/submission_id"


# -- retries and errors --------------------------------------------------------------------


def unreachable() -> None:
    responses.add(
        responses.POST, f"{TRANSFER}/transfer", body=requests.ConnectionError("no route to host")
    )


@pytest.mark.parametrize("trouble", ["503", "network"])
def test_a_transient_failure_on_submit_is_retried_into_one_task(
    mover: GlobusMover, slept: list[float], trouble: str
) -> None:
    if trouble == "503":
        refused(503, "ServiceUnavailable", "Globus is down for maintenance")
    else:
        unreachable()
    load_response(accepted())

    assert mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER) == TASK

    posts = calls_to("/v0.10/transfer", "POST")
    assert len(posts) == 2  # the SDK retried nothing itself
    assert {body_of(call.request)["submission_id"] for call in posts} == {SUBMISSION}
    assert slept == [mover.retry_delays[0]]


def test_retry_after_is_honoured_up_to_a_limit(mover: GlobusMover, slept: list[float]) -> None:
    for wait in ("7", "3600"):
        load_response(
            RegisteredResponse(
                service="transfer",
                method="POST",
                path="/v0.10/transfer",
                status=429,
                headers={"Retry-After": wait},
                json={"code": "RequestLimitExceeded", "message": "slow down"},
            )
        )
    load_response(accepted())
    mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)
    assert slept == [7.0, 30.0]


@pytest.mark.parametrize("trouble", ["503", "network"])
def test_globus_down_three_times_is_not_for_an_operator(
    mover: GlobusMover, slept: list[float], trouble: str
) -> None:
    if trouble == "503":
        refused(503, "ServiceUnavailable", "Globus is down for maintenance")
    else:
        unreachable()
    with pytest.raises(MoverError) as caught:
        mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)
    message = str(caught.value)
    assert not caught.value.needs_operator
    assert "after 3 attempts" in message and "\n" not in message
    assert ("ServiceUnavailable" in message) if trouble == "503" else ("no route" in message)
    assert len(calls_to("/v0.10/transfer")) == 3
    assert slept == list(mover.retry_delays)


@pytest.mark.parametrize(
    "status,code,message",
    [
        (401, "AuthenticationFailed", "Token is not active"),
        (403, "ConsentRequired", "Missing required data_access consent"),
        (403, "PermissionDenied", "No permission on\nthe collection"),
        (404, "ClientError.NotFound", f"Endpoint {PEER} not found"),
        (400, "ClientError.BadRequest", "Invalid path"),
    ],
)
def test_refusals_need_an_operator_and_are_not_retried(
    mover: GlobusMover, slept: list[float], status: int, code: str, message: str
) -> None:
    refused(status, code, message)
    load_response(accepted())  # would be answered to a retry
    with pytest.raises(MoverError) as caught:
        mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)
    assert caught.value.needs_operator
    assert str(caught.value) == (
        f"Globus submit failed: HTTP {status} {code}: {' '.join(message.split())}"
        " (request id req42)"
    )
    assert len(calls_to("/v0.10/transfer")) == 1 and slept == []


# -- status --------------------------------------------------------------------------------


def test_polling_goes_active_active_succeeded(mover: GlobusMover) -> None:
    globus_task("ACTIVE", bytes_transferred=0, nice_status="Queued")
    globus_task("ACTIVE", bytes_transferred=1_000)
    globus_task("SUCCEEDED", bytes_transferred=3_000)
    transferred(("/data/store/a.h5", "/staging/s1/a.h5"), ("/data/store/c.h5", "/staging/s1/c.h5"))

    reports = [mover.status(TASK) for _ in range(3)]

    assert [r.status for r in reports] == [TaskStatus.ACTIVE] * 2 + [TaskStatus.SUCCEEDED]
    assert [r.bytes_moved for r in reports] == [0, 1_000, 3_000]
    assert all(r.task_id == TASK and r.fault is None for r in reports)
    assert reports[0].items == reports[1].items == ()  # nothing listed while it runs
    assert [(r.item.destination, r.done, r.fault) for r in reports[2].items] == [
        ("/staging/s1/a.h5", True, None),
        ("/staging/s1/c.h5", True, None),
    ]
    assert len(calls_to(f"/v0.10/task/{TASK}")) == 3
    assert len(calls_to(f"/v0.10/task/{TASK}/successful_transfers")) == 1
    done = match_results(reports[2], [FILE, DIRECTORY, OTHER])
    assert all(result.done for result in done) and len(done) == 3  # every item arrived


def test_a_failed_task_keeps_globus_words_and_names_what_arrived(mover: GlobusMover) -> None:
    description = "Error (transfer)\nEndpoint: peer\n550 /staging/s1/c.h5: Permission denied\n"
    globus_task(
        "FAILED",
        bytes_transferred=2_048,
        fatal_error={"code": "PERMISSION_DENIED", "description": description},
    )
    transferred(("/data/store/a.h5", "/staging/s1/a.h5"), marker="page2")
    transferred(("/data/store/run7/x/y.dat", "/staging/s1/run7/x/y.dat"), after="page2")

    report = mover.status(TASK)

    assert report.status is TaskStatus.FAILED and report.bytes_moved == 2_048
    assert report.fault == f"PERMISSION_DENIED: {description}"  # verbatim, newlines and all
    assert {r.item.destination for r in report.items if r.done} == {
        "/staging/s1/a.h5",
        "/staging/s1/run7/x/y.dat",
    }
    pages = calls_to(f"/v0.10/task/{TASK}/successful_transfers")
    assert [parse_qs(urlparse(call.request.url).query) for call in pages] == [
        {},
        {"marker": ["page2"]},
    ]
    verdicts = {r.item.destination: r for r in match_results(report, [FILE, DIRECTORY, OTHER])}
    assert verdicts["/staging/s1/a.h5"].done and verdicts["/staging/s1/run7"].done
    assert not verdicts["/staging/s1/c.h5"].done
    assert verdicts["/staging/s1/c.h5"].fault == report.fault


def test_a_directory_counts_only_files_under_it() -> None:
    fault = "EXPIRED: deadline"
    arrived = TaskReport(
        TASK,
        TaskStatus.FAILED,
        (
            ItemResult(MoveItem("/data/store/c.h5", "/staging/s1/c.h5"), done=True),
            ItemResult(MoveItem("/data/store/run7/z", "/staging/s1/run7/z"), done=False),
        ),
        fault=fault,
    )
    sibling = MoveItem("/data/store/c", "/staging/s1/c", recursive=True)  # a prefix of c.h5
    same_file_spelled_as_dir = MoveItem("/data/store/c.h5/", "/staging/s1/c.h5/")
    parent = MoveItem("/data/store", "/staging/s1", recursive=True)
    verdicts = match_results(arrived, [sibling, same_file_spelled_as_dir, DIRECTORY, parent])
    assert [(v.item, v.done, v.fault) for v in verdicts] == [
        (sibling, False, fault),
        (same_file_spelled_as_dir, True, None),
        (DIRECTORY, False, fault),  # its one listed file did not arrive
        (parent, True, None),
    ]
    assert match_results(TaskReport(TASK, TaskStatus.ACTIVE), [FILE]) == ()
    assert match_results(TaskReport(TASK, TaskStatus.CANCELLED), [FILE])[0].fault


def test_an_inactive_task_is_stalled_with_globus_reason(mover: GlobusMover) -> None:
    globus_task(
        "INACTIVE",
        bytes_transferred=512,
        nice_status="CREDENTIAL_EXPIRED",
        nice_status_short_description="credential expired",
        nice_status_details="The credential for the destination collection has expired.",
    )
    report = mover.status(TASK)
    assert report.status is TaskStatus.STALLED and not report.status.final
    assert report.bytes_moved == 512 and report.items == ()
    assert report.fault is not None
    assert report.fault.startswith("Globus suspended the task (INACTIVE)")
    assert "CREDENTIAL_EXPIRED; credential expired; The credential for the destination" in (
        report.fault
    )
    assert len(responses.calls) == 1  # no listing for a task that is not over


def test_a_task_paused_by_an_administrator_is_stalled(mover: GlobusMover) -> None:
    globus_task("ACTIVE", is_paused=True, nice_status="PAUSED_BY_ADMIN")
    report = mover.status(TASK)
    assert report.status is TaskStatus.STALLED
    assert report.fault == "paused by a collection administrator's pause rule: PAUSED_BY_ADMIN"


def test_a_task_cancelled_by_an_administrator_is_a_failure(mover: GlobusMover) -> None:
    globus_task(
        "FAILED",
        fatal_error={"code": "CANCELED", "description": "canceled"},
        canceled_by_admin="DESTINATION",
        canceled_by_admin_message="disk maintenance",
    )
    transferred()
    report = mover.status(TASK)
    assert report.status is TaskStatus.FAILED
    assert report.fault == (
        "cancelled by an administrator of the destination collection: disk maintenance:"
        " CANCELED: canceled"
    )


def test_an_unknown_or_malformed_task_id_is_an_error(mover: GlobusMover) -> None:
    refused(404, "TaskNotFound", f"Task {TASK} not found", path=f"/v0.10/task/{TASK}")
    with pytest.raises(MoverError, match="HTTP 404 TaskNotFound") as caught:
        mover.status(TASK)
    assert caught.value.needs_operator
    with pytest.raises(MoverError, match="no Globus task"):
        mover.status("../endpoint_search")
    assert len(responses.calls) == 1


def test_a_status_globus_never_documented_is_an_error(mover: GlobusMover) -> None:
    globus_task("SUSPENDED_IN_SPACE")
    with pytest.raises(MoverError, match="SUSPENDED_IN_SPACE"):
        mover.status(TASK)


# -- cancel --------------------------------------------------------------------------------


def test_cancel_of_an_active_task_ends_it_cancelled(mover: GlobusMover) -> None:
    load_response(
        RegisteredResponse(
            service="transfer",
            method="POST",
            path=f"/v0.10/task/{TASK}/cancel",
            json={"DATA_TYPE": "result", "code": "Canceled", "message": "cancelled"},
        )
    )
    globus_task(
        "FAILED",
        bytes_transferred=10,
        fatal_error={"code": "CANCELED", "description": "The task was canceled by the user"},
    )
    transferred(("/data/store/a.h5", "/staging/s1/a.h5"))

    mover.cancel(TASK)
    report = mover.status(TASK)

    assert len(calls_to(f"/v0.10/task/{TASK}/cancel", "POST")) == 1
    assert report.status is TaskStatus.CANCELLED
    assert report.fault == "CANCELED: The task was canceled by the user"
    assert [r.item.destination for r in report.items] == ["/staging/s1/a.h5"]


@pytest.mark.parametrize("status", [200, 409])
def test_cancel_of_a_finished_task_does_nothing(
    mover: GlobusMover, slept: list[float], status: int
) -> None:
    cancel = f"/v0.10/task/{TASK}/cancel"
    refused(status, "TaskComplete", "The task completed before it could be cancelled", cancel)
    mover.cancel(TASK)
    assert len(calls_to(f"/v0.10/task/{TASK}/cancel", "POST")) == 1 and slept == []


def test_cancel_refused_for_another_reason_raises(mover: GlobusMover) -> None:
    refused(403, "PermissionDenied", "not your task", path=f"/v0.10/task/{TASK}/cancel")
    with pytest.raises(MoverError, match="HTTP 403 PermissionDenied: not your task") as caught:
        mover.cancel(TASK)
    assert caught.value.needs_operator


# -- construction, credentials, addressing --------------------------------------------------


def counting_secret(secret: str = "s3cr3t") -> tuple[Callable[[], str], list[int]]:
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        return secret

    return read, reads


def lazy_mover(read: Callable[[], str], slept: list[float]) -> GlobusMover:
    mover = GlobusMover(client_id=CLIENT_ID, client_secret=read, collection_id=OURS)
    mover.sleep = slept.append
    return mover


def test_construction_reads_no_secret_and_calls_nobody(slept: list[float]) -> None:
    read, reads = counting_secret()
    mover = lazy_mover(read, slept)
    mover.address("/data/store/a.h5")
    assert isinstance(mover, Mover) and mover.name == "globus"
    assert reads == [] and len(responses.calls) == 0
    assert "s3cr3t" not in repr(mover)


def test_importing_the_module_loads_no_globus_sdk() -> None:
    code = (
        "import sys, librarian_dagster.storage.movers.globus\n"
        "print(sorted(m for m in ('globus_sdk', 'requests') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_first_call_fetches_a_token_with_the_secret_once(slept: list[float]) -> None:
    read, reads = counting_secret()
    mover = lazy_mover(read, slept)
    load_response("auth.oauth2_client_credentials_tokens")
    load_response("transfer.get_submission_id")
    refused(503, "ServiceUnavailable", "busy")
    load_response(accepted())

    mover.new_submission_id()
    mover.submit([FILE], label="b", submission_id=SUBMISSION, endpoint=PEER)

    token_calls = calls_to("/v2/oauth2/token", "POST")
    assert reads == [1] and len(token_calls) == 1
    auth = token_calls[0].request
    expected = base64.b64encode(f"{CLIENT_ID}:s3cr3t".encode()).decode()
    assert auth.headers["Authorization"] == f"Basic {expected}"
    form = parse_qs(auth.body if isinstance(auth.body, str) else auth.body.decode())
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == ["urn:globus:auth:scope:transfer.api.globus.org:all"]
    transfer_calls = [call for call in responses.calls if "transfer.api" in call.request.url]
    assert {call.request.headers["Authorization"] for call in transfer_calls} == {f"Bearer {TOKEN}"}
    # the built client leaves retries to the mover: one 503, one pause of ours, two posts
    assert len(calls_to("/v0.10/transfer", "POST")) == 2 and slept == [mover.retry_delays[0]]


def test_a_refused_client_secret_needs_an_operator(slept: list[float]) -> None:
    read, reads = counting_secret("wrong")
    mover = lazy_mover(read, slept)
    load_response(
        RegisteredResponse(
            service="auth",
            method="POST",
            path="/v2/oauth2/token",
            status=401,
            json={"error": "invalid_client", "error_description": "Invalid client credentials"},
        )
    )
    with pytest.raises(MoverError) as caught:
        mover.new_submission_id()
    assert caught.value.needs_operator
    assert "HTTP 401 invalid_client: Invalid client credentials" in str(caught.value)
    assert len(responses.calls) == 1 and slept == [] and reads == [1]


def test_globus_auth_down_at_token_time_is_retried_by_the_mover(slept: list[float]) -> None:
    read, reads = counting_secret()
    mover = lazy_mover(read, slept)
    load_response(
        RegisteredResponse(
            service="auth", method="POST", path="/v2/oauth2/token", status=503, body="busy"
        )
    )
    load_response("auth.oauth2_client_credentials_tokens")
    load_response("transfer.get_submission_id")
    mover.new_submission_id()
    # the auth client leaves retries to the mover too: two token requests, one pause of ours
    assert len(calls_to("/v2/oauth2/token")) == 2 and slept == [mover.retry_delays[0]]
    assert reads == [1, 1]  # the build was tried again, reading the secret again


@pytest.mark.timeout(20)  # a renewal loop would hang rather than fail
def test_a_revoked_token_is_renewed_once_then_needs_an_operator(slept: list[float]) -> None:
    read, _ = counting_secret()
    mover = lazy_mover(read, slept)
    load_response("auth.oauth2_client_credentials_tokens")
    refused(401, "AuthenticationFailed", "Token is not active", path=f"/v0.10/task/{TASK}")
    with pytest.raises(MoverError, match="HTTP 401 AuthenticationFailed") as caught:
        mover.status(TASK)
    assert caught.value.needs_operator
    assert len(calls_to("/v2/oauth2/token")) == 2  # the first token, and one renewal
    assert len(calls_to(f"/v0.10/task/{TASK}")) == 2 and slept == []


@pytest.mark.parametrize(
    "secret,said",
    [
        (KeyError("GLOBUS_CLIENT_SECRET"), "cannot read the Globus client secret: KeyError"),
        ("", "the Globus client secret is empty"),
        (MoverError("GLOBUS_CLIENT_SECRET is not set", needs_operator=True), "^GLOBUS_CLIENT"),
    ],
)
def test_a_missing_secret_needs_an_operator(slept: list[float], secret: Any, said: str) -> None:
    def read() -> str:
        if isinstance(secret, Exception):
            raise secret
        return str(secret)

    with pytest.raises(MoverError, match=said) as caught:
        lazy_mover(read, slept).new_submission_id()
    assert caught.value.needs_operator and len(responses.calls) == 0


def test_a_bad_sync_level_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="sync_level"):
        GlobusMover(client_id="c", client_secret=never_read, collection_id=OURS, sync_level="x")


def test_address_maps_local_paths_into_the_collection(tmp_path: Path) -> None:
    mover = GlobusMover(
        client_id=CLIENT_ID,
        client_secret=never_read,
        collection_id=OURS,
        local_root=tmp_path / "root",
        path_prefix="/site/",
    )
    assert mover.address(tmp_path / "root" / "store" / "a.h5") == "/site/store/a.h5"
    assert mover.address(str(tmp_path / "root")) == "/site"
    assert (
        GlobusMover(client_id=CLIENT_ID, client_secret=never_read, collection_id=OURS).address(
            "/data/x"
        )
        == "/data/x"
    )
    for outside in (tmp_path / "elsewhere", tmp_path / "root" / ".." / "root2" / "a"):
        with pytest.raises(MoverError, match="cannot address") as caught:
            mover.address(outside)
        assert caught.value.needs_operator
        assert isinstance(caught.value.__cause__, PathEscapeError)
