"""The resources every run is given: the same five keys everywhere; peers and notifier."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.database import get_catalogue
from librarian_dagster.catalogue.models import Event, Librarian
from librarian_dagster.definitions import build_definitions
from librarian_dagster.resources import NotifierResource, PeersResource, librarian_resources
from librarian_dagster.services.bootstrap import ensure_secret_key, prepare
from librarian_dagster.services.errors import NotFound, Unavailable
from librarian_dagster.services.peers import encrypt_password
from librarian_dagster.settings import SECRET_KEY_ENV, LibrarianSettings
from librarian_dagster.states import Severity

defs = build_definitions()

KEYS = {"catalogue", "stores", "mover", "peers", "notifier"}
TOKEN = "xoxb-not-a-real-token-0123456789"


def test_the_code_location_binds_every_resource_key() -> None:
    assert set(librarian_resources()) == KEYS
    repository = defs.get_repository_def()
    assert set(repository.get_top_level_resources()) == KEYS


@pytest.fixture
def settings(make_settings: Callable[..., LibrarianSettings]) -> LibrarianSettings:
    settings = make_settings()
    prepare(settings)
    return settings


def add_peer(settings: LibrarianSettings, password: str) -> None:
    with get_catalogue(settings.catalogue_url).session() as session:
        session.add(
            Librarian(
                name="site-b",
                url="http://127.0.0.1:9",
                remote_user="test-site",
                encrypted_password=encrypt_password(settings, password),
            )
        )


def test_peers_give_a_client_logged_in_with_the_decrypted_password(
    settings: LibrarianSettings,
) -> None:
    ensure_secret_key(settings)
    add_peer(settings, "peer-secret-password")
    with get_catalogue(settings.catalogue_url).session() as session:
        stored = session.scalar(select(Librarian.encrypted_password))
    assert stored is not None and b"peer-secret-password" not in stored
    peers = PeersResource(config_file=str(settings.config_file))
    access = peers.access("site-b")
    assert (access.url, access.user, access.password) == (
        "http://127.0.0.1:9",
        "test-site",
        "peer-secret-password",
    )
    assert "peer-secret-password" not in repr(access)
    with peers.client("site-b") as client:
        assert client.url == "http://127.0.0.1:9" and client.user == "test-site"
    with pytest.raises(NotFound, match="no peer named 'site-c'"):
        peers.access("site-c")


def test_peer_passwords_need_the_key_they_were_stored_with(
    settings: LibrarianSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_KEY_ENV, "the-key-of-the-day")
    add_peer(settings, "peer-secret-password")
    peers = PeersResource(config_file=str(settings.config_file))
    monkeypatch.setenv(SECRET_KEY_ENV, "another-key")
    with pytest.raises(Unavailable, match="cannot decrypt the password of peer 'site-b'"):
        peers.access("site-b")
    monkeypatch.delenv(SECRET_KEY_ENV)
    with pytest.raises(Unavailable, match="no secret key"):
        PeersResource(config_file=str(settings.config_file)).access("site-b")


class FakeSlack:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.posted: list[dict[str, Any]] = []

    def chat_postMessage(self, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("slack is down")
        self.posted.append(kwargs)


def notifier_with(settings: LibrarianSettings, slack: FakeSlack) -> NotifierResource:
    class Notifier(NotifierResource):
        def slack_client(self, token: str) -> Any:
            assert token == TOKEN
            return slack

    return Notifier(config_file=str(settings.config_file))


def alert_events(settings: LibrarianSettings) -> list[Event]:
    with get_catalogue(settings.catalogue_url).session() as session:
        return list(session.scalars(select(Event).where(Event.kind == "drive_full")))


def test_without_notify_an_alert_becomes_an_operator_event(
    settings: LibrarianSettings, caplog: pytest.LogCaptureFixture
) -> None:
    slack = FakeSlack()
    with caplog.at_level(logging.WARNING):
        where = notifier_with(settings, slack).alert(
            "drive1 is full", "ship it", kind="drive_full", severity=Severity.WARNING
        )
    assert where == "events" and slack.posted == []
    (event,) = alert_events(settings)
    assert event.message == "drive1 is full: ship it" and event.severity == Severity.WARNING
    assert "drive1 is full" in caplog.text


def test_with_notify_an_alert_goes_to_the_slack_channel(
    make_settings: Callable[..., LibrarianSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        extra_toml='[notify]\nslack_token_env = "TEST_SLACK_TOKEN"\nslack_channel = "#ops"'
    )
    prepare(settings)
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    slack = FakeSlack()
    assert notifier_with(settings, slack).alert("drive1 is full", "ship it") == "slack"
    assert slack.posted == [{"channel": "#ops", "text": "*drive1 is full*\nship it"}]
    assert alert_events(settings) == []


def test_when_slack_fails_the_alert_is_kept_and_the_token_never_shown(
    make_settings: Callable[..., LibrarianSettings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(extra_toml='[notify]\nslack_token_env = "TEST_SLACK_TOKEN"')
    prepare(settings)
    monkeypatch.setenv("TEST_SLACK_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        where = notifier_with(settings, FakeSlack(fail=True)).alert(
            "drive1 is full", "ship it", kind="drive_full"
        )
    assert where == "events"
    (event,) = alert_events(settings)
    assert event.details == {"not_sent": "Slack did not take it (ConnectionError)"}
    assert TOKEN not in caplog.text and TOKEN not in event.message
    monkeypatch.delenv("TEST_SLACK_TOKEN")
    assert notifier_with(settings, FakeSlack()).alert("again", "x", kind="drive_full") == "events"
    assert alert_events(settings)[-1].details == {"not_sent": "TEST_SLACK_TOKEN is not set"}
