"""Schemathesis fuzzes every operation of a live librarian, as an admin and as an uploader.

The schema is the app's own OpenAPI document, built at collection (pytest needs the
operations then, before any server runs) and checked to be the one the live librarian
serves, so a route added later is fuzzed here without editing this file. Checks: no 5xx,
every status and content type documented, every response body matching its documented
schema. Bounded by ``MAX_EXAMPLES`` per operation and credential (under a minute here).

"Schema-valid request rejected" is not checked: the schema cannot say which cursors decode or
which names are taken, and refusing those with 400/409 is the point.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from librarian_dagster.api.app import create_app
from librarian_dagster.settings import LibrarianSettings
from tests.live import LiveLibrarian

pytestmark = pytest.mark.live

MAX_EXAMPLES = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_PASSWORD = "fuzz-password-0123"
# A tar stream is bytes on the wire, like application/octet-stream.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
ACCOUNTS = {"admin": "fuzz-admin", "read_append": "fuzz-uploader"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLibrarian]:
    librarian = LiveLibrarian(Path(tmp_path_factory.mktemp("fuzz")), name="fuzz-site")
    librarian.start()
    try:
        for level, name in ACCOUNTS.items():
            created = librarian.librarian(
                "user", "create", name, "--level", level, "--password", FUZZ_PASSWORD
            )
            assert created.returncode == 0, created.stderr
        yield librarian
    finally:
        librarian.stop()


def app_schema() -> dict[str, Any]:
    """The OpenAPI document of an app on throwaway settings (no server, no catalogue yet)."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        settings = LibrarianSettings(
            name="fuzz-site",
            data_dir=root / "state",
            database_url=f"sqlite:///{root / 'catalogue.sqlite'}",
            stores=[{"name": "main", "root": root / "stores" / "main", "reserve_bytes": 0}],
        )
        return create_app(settings).openapi_schema.to_schema()


APP_SCHEMA = app_schema()
schema = schemathesis.openapi.from_dict(APP_SCHEMA)


def test_live_librarian_serves_this_schema(live: LiveLibrarian) -> None:
    served = httpx.get(f"{live.api_url}/schema/openapi.json", timeout=30).json()
    assert served == APP_SCHEMA


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
)


def _call(case: schemathesis.Case, live: LiveLibrarian, level: str) -> None:
    case.call_and_validate(
        base_url=live.api_url, auth=(ACCOUNTS[level], FUZZ_PASSWORD), checks=CHECKS, timeout=60
    )


# The uploader goes first: the admin's fuzzing may change accounts (never its own or the
# uploader's on purpose, but a generated name can match).
@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_uploader(case: schemathesis.Case, live: LiveLibrarian) -> None:
    _call(case, live, "read_append")


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_as_admin(case: schemathesis.Case, live: LiveLibrarian) -> None:
    _call(case, live, "admin")
