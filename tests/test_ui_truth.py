"""What the Dagster UI shows is true, asked through the GraphQL queries the UI itself sends.

One real ``librarian serve`` (API, webserver, daemon): an upload whose checksum is wrong
makes its commit-time run fail and say who asked for it; that API-executed run can be
re-executed as the UI's *Re-execute* button does; a damaged copy makes ``checksums_match``
fail on two executions in a row and ``/ping`` unhealthy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from librarian_dagster.client import LibrarianClient
from librarian_dagster.storage.checksums import hash_path
from tests.live import ADMIN_PASSWORD, LiveLibrarian

pytestmark = pytest.mark.live

RUNS = """
query RunsRoot($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message }
  }
}
"""
REEXECUTE = """
mutation LaunchPipelineReexecution($reexecutionParams: ReexecutionParams) {
  launchPipelineReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
  }
}
"""
LAUNCH = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
CHECK_EXECUTIONS = """
query AssetCheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 10) {
    runId status evaluation { success severity }
  }
}
"""
FINAL = {"SUCCESS", "FAILURE", "CANCELED"}
# What the UI sends for *Execute* on the book's checksums_match check.
CHECK_EXECUTION = {
    "selector": {
        "repositoryLocationName": "librarian",
        "repositoryName": "__repository__",
        "pipelineName": "__ASSET_JOB",
        "assetSelection": [],
        "assetCheckSelection": [{"assetKey": {"path": ["book"]}, "name": "checksums_match"}],
    },
    "mode": "default",
    "executionMetadata": {"tags": []},
}


def graphql(site: LiveLibrarian, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{site.webserver_url}/graphql",
        json={"query": query, "variables": variables},
        timeout=60,
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def runs(site: LiveLibrarian, **filter_: Any) -> list[dict[str, Any]]:
    found = graphql(site, RUNS, filter=filter_, limit=50)["runsOrError"]
    assert "results" in found, found
    return found["results"]


def run_status(site: LiveLibrarian, run_id: str) -> str:
    (run,) = runs(site, runIds=[run_id])
    return run["status"]


def wait_final(site: LiveLibrarian, run_id: str, timeout: float = 120) -> str:
    site.wait_until(lambda: run_status(site, run_id) in FINAL, timeout, f"run {run_id}")
    return run_status(site, run_id)


def tags_of(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def upload_with_wrong_checksum(client: LibrarianClient, source: Path, name: str) -> int:
    size = source.stat().st_size
    staged = client.request(
        "POST", "/uploads", json={"name": name, "size": size, "checksum": None}
    ).json()
    upload_id = staged["upload_id"]
    client.request(
        "PUT",
        f"/uploads/{upload_id}/content",
        content=source.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    client.request(
        "POST", f"/uploads/{upload_id}/commit", json={"checksum": "xxh3_128:" + "0" * 32}
    )
    return upload_id


def wait_refused(client: LibrarianClient, upload_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.get_upload(upload_id).status.value != "failed":
        assert time.monotonic() < deadline, "the bad upload was never refused"
        time.sleep(0.5)


def failed_ingest_run(site: LiveLibrarian, book: str, timeout: float = 60) -> dict[str, Any]:
    """The ingest run that refused ``book``, once it has ended FAILURE."""

    def failed() -> list[dict[str, Any]]:
        return [
            run
            for run in runs(site, pipelineName="ingest_books")
            if run["status"] == "FAILURE" and book in tags_of(run)["librarian/books"]
        ]

    site.wait_until(failed, timeout, f"the run that refused {book} to end failed")
    return failed()[0]


def test_failed_runs_checks_and_re_execution_look_as_they_are(tmp_path: Path) -> None:
    site = LiveLibrarian(tmp_path / "site")
    site.directory.mkdir()
    try:
        site.start()
        good = tmp_path / "good.dat"
        good.write_bytes(b"good bytes " * 1000)
        bad = tmp_path / "bad.dat"
        bad.write_bytes(b"bytes that will not match")
        with LibrarianClient(site.api_url, "admin", ADMIN_PASSWORD) as client:
            client.upload(good, "ui/good")
            wait_refused(client, upload_with_wrong_checksum(client, bad, "ui/bad"))

        # The commit-time run that refused the book is red and says who asked for it.
        parent = failed_ingest_run(site, "ui/bad")
        assert tags_of(parent)["user"] == "admin (commit)"
        assert tags_of(parent)["librarian/executor"] == "api"

        # Re-execute, as the UI's button does: accepted; the new run does only what is still
        # missing (the stored book is skipped) and stays red over the book refused for good.
        launched = graphql(
            site,
            REEXECUTE,
            reexecutionParams={"parentRunId": parent["runId"], "strategy": "ALL_STEPS"},
        )["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child_id = launched["run"]["runId"]
        assert wait_final(site, child_id) == "FAILURE", site.log()
        (child,) = runs(site, runIds=[child_id])
        child_tags = tags_of(child)
        assert child_tags["dagster/parent_run_id"] == parent["runId"]
        assert child_tags["user"] == f"re-execution of {parent['runId'][:8]}"
        assert child_tags["librarian/executor"] == "queue"
        with LibrarianClient(site.api_url, "admin", ADMIN_PASSWORD) as client:
            assert [f.name for f in client.search_files(name="ui/*")] == ["ui/good"]

            # Damage the stored copy; run the check twice, as the UI's "Execute" does.
            stored = Path(client.get_file("ui/good").instances[0].path)
            assert hash_path(stored) == hash_path(good)
        stored.chmod(0o644)
        stored.write_bytes(b"bit rot")
        check_runs = []
        for _ in range(2):
            launched = graphql(site, LAUNCH, executionParams=CHECK_EXECUTION)[
                "launchPipelineExecution"
            ]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]
            assert wait_final(site, run_id) == "FAILURE"  # not green over a damaged book
            check_runs.append(run_id)
        executions = graphql(
            site, CHECK_EXECUTIONS, assetKey={"path": ["book"]}, checkName="checksums_match"
        )["assetCheckExecutions"]
        by_run = {execution["runId"]: execution for execution in executions}
        for run_id in check_runs:
            assert by_run[run_id]["status"] == "FAILED", by_run
            assert by_run[run_id]["evaluation"]["success"] is False

        ping = httpx.get(f"{site.api_url}/api/v2/ping").json()
        assert ping["healthy"] is False and ping["corrupt_copies"] == 1
    finally:
        site.stop()
