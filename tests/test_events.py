"""The operator event log: grouped causes, one Slack message per cause, /events and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.catalogue.models import Event
from librarian_dagster.cli.main import app as cli
from librarian_dagster.services.events import raise_event, record_event
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import Severity, UserLevel
from tests.api_helpers import api_client, credentials
from tests.test_resources import (
    TOKEN,
    FakeSlack,
    notifier_with,
)

ADMIN = credentials(UserLevel.ADMIN)


@pytest.fixture
def settings(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> LibrarianSettings:
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    return make_settings(
        database_url=database_url,
        extra_toml='[notify]\nslack_token_env = "TEST_SLACK_TOKEN"\nslack_channel = "#ops"',
    )


@pytest.fixture
def api(settings: LibrarianSettings) -> Iterator[TestClient]:
    with api_client(settings) as client:
        yield client


def rows(settings: LibrarianSettings) -> list[Event]:
    with get_catalogue(settings.catalogue_url).session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def test_the_same_cause_twice_is_one_event_and_one_message(
    settings: LibrarianSettings, api: TestClient
) -> None:
    slack = FakeSlack()
    notifier = notifier_with(settings, slack)
    first = notifier.alert("Peer site-b unreachable", "for 2 h", subject="site-b", kind="peer_down")
    again = notifier.alert("Peer site-b unreachable", "for 3 h", subject="site-b", kind="peer_down")
    other = notifier.alert("Peer site-c unreachable", "for 2 h", subject="site-c", kind="peer_down")
    assert (first, again, other) == ("slack", "grouped", "slack")
    assert [message["text"] for message in slack.posted] == [
        "*Peer site-b unreachable*\nfor 2 h",
        "*Peer site-c unreachable*\nfor 2 h",
    ]
    b_event, c_event = rows(settings)
    assert (b_event.count, b_event.message) == (2, "Peer site-b unreachable: for 3 h")
    assert b_event.last_at is not None and b_event.notified_at is not None
    assert c_event.count == 1

    # Once resolved, the same cause is news again: a new event, a new message.
    resolved = api.post(
        "/api/v2/events/resolve", json={"ids": [b_event.id], "note": "link fixed"}, auth=ADMIN
    )
    assert resolved.status_code == 200, resolved.text
    (closed,) = resolved.json()["events"]
    assert closed["resolved"] and closed["resolved_by"] == ADMIN[0]
    assert closed["note"] == "link fixed"
    assert notifier.alert(
        "Peer site-b unreachable", "again", subject="site-b", kind="peer_down"
    ) == ("slack")
    assert len(slack.posted) == 3 and len(rows(settings)) == 3


def test_a_cause_still_open_after_remind_hours_is_posted_again_with_its_count(
    settings: LibrarianSettings, api: TestClient
) -> None:
    slack = FakeSlack()
    notifier = notifier_with(settings, slack)
    notifier.alert("Drive d1 is full", "ship it", subject="d1", kind="drive_full")
    with get_catalogue(settings.catalogue_url).session() as session:
        session.execute(update(Event).values(notified_at=datetime.now(UTC) - timedelta(hours=25)))
    assert notifier.alert("Drive d1 is full", "ship it", subject="d1", kind="drive_full") == (
        "slack"
    )
    assert notifier.alert("Drive d1 is full", "ship it", subject="d1", kind="drive_full") == (
        "grouped"
    )
    assert len(slack.posted) == 2
    assert "seen 2 times" in slack.posted[1]["text"]
    (event,) = rows(settings)
    assert event.count == 3


def test_without_notify_grouping_still_holds(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> None:
    settings = make_settings(database_url=database_url)
    with api_client(settings):
        pass
    notifier = notifier_with(settings, FakeSlack())
    assert notifier.alert("x", "y", subject="s", kind="k") == "events"
    assert notifier.alert("x", "y", subject="s", kind="k") == "grouped"
    (event,) = rows(settings)
    assert event.count == 2 and event.details == {"not_sent": "no [notify] section in the config"}


def test_list_filters_pages_and_resolves_all_or_nothing(
    settings: LibrarianSettings, api: TestClient
) -> None:
    with get_catalogue(settings.catalogue_url).session() as session:
        for index in range(5):
            record_event(session, Severity.WARNING, "book_refused", f"refused {index}")
        record_event(session, Severity.CRITICAL, "copy_mismatch", "bad", subject="b/1")
        raise_event(session, Severity.WARNING, "peer_down", "down", subject="site-b")
        raise_event(session, Severity.ERROR, "peer_down", "still down", subject="site-b")
    listed = api.get("/api/v2/events", auth=ADMIN).json()
    assert listed["open"] == 7 and len(listed["events"]) == 7
    assert listed["events"][0]["kind"] == "peer_down"  # newest first
    assert listed["events"][0]["severity"] == "error" and listed["events"][0]["count"] == 2
    grave = api.get("/api/v2/events", params={"severity": "error"}, auth=ADMIN).json()
    assert {event["kind"] for event in grave["events"]} == {"copy_mismatch", "peer_down"}
    about = api.get("/api/v2/events", params={"subject": "b/1"}, auth=ADMIN).json()
    assert [event["message"] for event in about["events"]] == ["bad"]
    page = api.get("/api/v2/events", params={"limit": 4}, auth=ADMIN).json()
    rest = api.get(
        "/api/v2/events", params={"limit": 4, "cursor": page["next_cursor"]}, auth=ADMIN
    ).json()
    ids = [event["id"] for event in page["events"] + rest["events"]]
    assert len(ids) == 7 == len(set(ids)) and rest["next_cursor"] is None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.get("/api/v2/events", params={"since": later}, auth=ADMIN).json()["events"] == []

    # Bad input changes nothing and says what is wrong.
    for bad in (
        {"ids": [ids[0], 999_999], "note": "x"},
        {"ids": [], "note": "x"},
        {"ids": [ids[0]], "note": ""},
        {"ids": ["1"], "note": "x"},
        {"ids": [ids[0]], "note": "x", "extra": 1},
    ):
        answer = api.post("/api/v2/events/resolve", json=bad, auth=ADMIN)
        assert answer.status_code in (400, 404), (bad, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert api.get("/api/v2/events", params={"cursor": "nonsense"}, auth=ADMIN).status_code == 400
    assert api.get("/api/v2/events", params={"severity": "meh"}, auth=ADMIN).status_code == 400
    naive = api.get("/api/v2/events", params={"since": "2026-01-01T00:00:00"}, auth=ADMIN)
    assert naive.status_code == 400
    assert api.get("/api/v2/events", auth=ADMIN).json()["open"] == 7
    for level in (UserLevel.CALLBACK, UserLevel.READ_ONLY, UserLevel.READ_APPEND):
        assert api.get("/api/v2/events", auth=credentials(level)).status_code == 403
        refused = api.post(
            "/api/v2/events/resolve", json={"ids": [ids[0]], "note": "x"}, auth=credentials(level)
        )
        assert refused.status_code == 403
    assert api.get("/api/v2/events").status_code == 401


def test_the_cli_lists_and_resolves(settings: LibrarianSettings, api: TestClient) -> None:
    with get_catalogue(settings.catalogue_url).session() as session:
        first = record_event(session, Severity.ERROR, "copy_missing", "gone", subject="[b]/1").id
        second = record_event(session, Severity.INFO, "drive_wiped", "wiped", subject="d1").id
    runner = CliRunner()
    config = ["--config", str(settings.config_file)]
    shown = runner.invoke(cli, [*config, "events", "list"])
    assert shown.exit_code == 0, shown.output
    assert (
        "copy_missing" in shown.output
        and "[b]/1" in shown.output
        and "2 open events" in (shown.output)
    )
    as_json = runner.invoke(cli, [*config, "events", "list", "--severity", "error", "--json"])
    assert [event["id"] for event in json.loads(as_json.output)] == [first]
    unknown = runner.invoke(
        cli, [*config, "events", "resolve", str(first), "424242", "--note", "x"]
    )
    assert unknown.exit_code != 0 and "no event 424242" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    done = runner.invoke(
        cli, [*config, "events", "resolve", str(first), str(second), "--note", "ok"]
    )
    assert done.exit_code == 0, done.output
    assert f"event {first} (copy_missing) resolved" in done.output
    left = runner.invoke(cli, [*config, "events", "list"])
    assert "0 open events" in left.output
    history = runner.invoke(cli, [*config, "events", "list", "--all", "--json"])
    assert {event["resolved_by"] for event in json.loads(history.output)} == {
        f"cli:{__import__('getpass').getuser()}"
    }
