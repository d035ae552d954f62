"""Alerts no job raises: a failed run, a peer down for hours (grouped; one message a cause)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from librarian_dagster.catalogue.models import Event, Librarian
from librarian_dagster.resources import NotifierResource
from librarian_dagster.sensors.integrity_alerts import peer_health_sensor, run_failure_alerts
from librarian_dagster.services.peers import record_contact
from tests.ingest_helpers import Site, dagster_resources
from tests.test_integrity_job import FakeSlack, rot, shelve, site  # noqa: F401 (fixture)


def notifier_for(site: Site, slack: FakeSlack) -> NotifierResource:  # noqa: F811
    class Notifier(NotifierResource):
        def slack_client(self, token: str) -> Any:
            return slack

    return Notifier(config_file=str(site.settings.config_file))


def failed_run(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    @dg.op
    def breaks() -> None:
        raise RuntimeError("disk on fire")

    @dg.job(name="fragile")
    def fragile() -> None:
        breaks()

    result = fragile.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return run, failure


def test_every_failed_run_is_told_once_per_job(
    site: Site,  # noqa: F811
    instance: dg.DagsterInstance,
) -> None:
    slack = FakeSlack()
    notifier = notifier_for(site, slack)
    for _ in range(2):
        run, failure = failed_run(instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alerts",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        run_failure_alerts(context, notifier=notifier)
    (message,) = slack.posted
    assert "Run of fragile failed" in message["text"]
    with site.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "run_failed")).all()
        assert event.subject == "fragile" and event.count == 2


def test_a_peer_down_for_hours_is_one_alert_and_resolved_when_back(
    site: Site,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slack = FakeSlack()
    notifier = notifier_for(site, slack)
    long_ago = datetime.now(UTC) - timedelta(hours=30)
    with site.catalogue.session() as session:
        peer = Librarian(
            name="site-z",
            url="http://z.test",
            remote_user="test-site",
            encrypted_password=b"x",
            created_at=long_ago,
            last_seen_at=long_ago,
        )
        session.add(peer)
        session.flush()
        peer_id = peer.id
        record_contact(session, peer_id, "connection refused")
    resources = {"catalogue": dagster_resources(site)["catalogue"], "notifier": notifier}
    for _ in range(3):
        with dg.build_sensor_context(resources=resources) as context:
            skipped = peer_health_sensor(context)
        assert "1 peers down (site-z)" in str(skipped.skip_message)
    (message,) = slack.posted
    assert "Peer site-z unreachable" in message["text"] and "connection refused" in message["text"]

    with site.catalogue.session() as session:
        record_contact(session, peer_id, None)
    with dg.build_sensor_context(resources=resources) as context:
        peer_health_sensor(context)
    with site.catalogue.session() as session:
        (event,) = session.scalars(select(Event).where(Event.kind == "peer_unreachable")).all()
        assert event.resolved and event.count == 3


def test_a_short_outage_is_not_an_alert(site: Site) -> None:  # noqa: F811
    slack = FakeSlack()
    with site.catalogue.session() as session:
        peer = Librarian(
            name="site-y", url="http://y.test", remote_user="t", encrypted_password=b"x"
        )
        session.add(peer)
        session.flush()
        record_contact(session, peer.id, None)
        record_contact(session, peer.id, "timed out")
    resources = {
        "catalogue": dagster_resources(site)["catalogue"],
        "notifier": notifier_for(site, slack),
    }
    with dg.build_sensor_context(resources=resources) as context:
        peer_health_sensor(context)
    assert slack.posted == []


def test_a_failed_integrity_pass_alerts_through_the_same_notifier(
    site: Site,  # noqa: F811
    instance: dg.DagsterInstance,
) -> None:
    names = shelve(site, 3)
    rot(site, names[0])
    from tests.test_integrity_job import job_with_slack

    slack = FakeSlack()
    result = job_with_slack(site, slack).execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert any(names[0] in message["text"] for message in slack.posted)


def test_stuck_and_failed_transfers_in_the_event_log_are_forwarded_once(
    site: Site,  # noqa: F811
) -> None:
    from librarian_dagster.sensors.integrity_alerts import event_alerts_sensor
    from librarian_dagster.services.events import record_event
    from librarian_dagster.states import Severity

    slack = FakeSlack()
    resources = {
        "catalogue": dagster_resources(site)["catalogue"],
        "notifier": notifier_for(site, slack),
    }

    def age_events() -> None:  # past the catalogue's commit lag, as time would
        with site.catalogue.session() as session:
            for event in session.scalars(select(Event)):
                event.created_at -= timedelta(hours=1)

    with site.catalogue.session() as session:
        record_event(session, Severity.ERROR, "clone_failed", "history: not replayed")
    age_events()
    with dg.build_sensor_context(resources=resources) as context:
        first = event_alerts_sensor(context)
    assert slack.posted == []
    with site.catalogue.session() as session:
        record_event(session, Severity.WARNING, "transfer_stuck", "batch 7: no progress")
        record_event(session, Severity.ERROR, "clone_failed", "sending b/1 failed 5 times")
        record_event(session, Severity.INFO, "copy_repaired", "not forwarded")
    with dg.build_sensor_context(resources=resources, cursor=first.cursor) as context:
        too_new = event_alerts_sensor(context)
    assert slack.posted == [] and too_new.cursor == first.cursor
    age_events()
    with dg.build_sensor_context(resources=resources, cursor=first.cursor) as context:
        second = event_alerts_sensor(context)
    texts = sorted(message["text"] for message in slack.posted)
    assert len(texts) == 2 and "failed 5 times" in texts[0] and "no progress" in texts[1]
    with dg.build_sensor_context(resources=resources, cursor=second.cursor) as context:
        event_alerts_sensor(context)
    assert len(slack.posted) == 2
