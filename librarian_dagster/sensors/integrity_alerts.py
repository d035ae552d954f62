"""Alerts that no job raises: a run that failed, a peer that has not answered for hours.

``run_failure_alerts``: every failed run of this code location goes to the notifier,
grouped by job (the same job failing again is counted on its open event, not sent again
until the reminder is due; ``resources.notifier``).

``peer_health_sensor`` (every 5 minutes): peers down for longer than ``[transfer]
peer_unreachable_alert_hours`` get a grouped ``peer_unreachable`` alert; a peer that answers
again has its event resolved (``services.peer_health``).

``event_alerts_sensor`` (every minute): events that services record where no notifier is
at hand (a transfer given up as stuck, a book failed for good after its retries, an
ingest given up, a stalled mover, an upload that expired) are forwarded, one grouped alert
per kind, after the last event id it saw (its cursor; it starts at the newest, never
replaying history).

They only tell; they start nothing.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import func, select

from librarian_dagster.catalogue.models import Event
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.resources.notifier import NotifierResource
from librarian_dagster.services.peer_health import PEER_DOWN_KIND, peers_down, resolve_peers_back
from librarian_dagster.states import Severity


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tells operators (Slack or the event log) about every failed run, grouped by job.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    error = (context.failure_event.message or "no message")[:1500]
    where = notifier.alert(
        f"Run of {run.job_name} failed",
        f"run {run.run_id}: {error}",
        severity=Severity.ERROR,
        kind="run_failed",
        subject=run.job_name,
        details={"run_id": run.run_id},
    )
    context.log.info(f"run {run.run_id} of {run.job_name} failed: alert {where}")


@dg.sensor(
    name="peer_health_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts when a peer has not answered for hours; resolves it when it is back.",
)
def peer_health_sensor(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    notifier: NotifierResource,
) -> dg.SkipReason:
    hours = catalogue.settings.transfer.peer_unreachable_alert_hours
    with catalogue.session() as session:
        down = peers_down(session, hours, datetime.now(UTC))
        back = resolve_peers_back(session)
    for peer in down:
        notifier.alert(
            f"Peer {peer.name} unreachable",
            f"no answer since {peer.since:%Y-%m-%d %H:%M} UTC (over {hours:g} h); last error: "
            f"{peer.last_error[:500]}. Transfers and callbacks to it wait and resume by "
            "themselves once it answers.",
            severity=Severity.WARNING,
            kind=PEER_DOWN_KIND,
            subject=peer.name,
        )
    return dg.SkipReason(
        f"{len(down)} peers down ({', '.join(p.name for p in down) or 'none'}); {len(back)} back"
    )


FORWARDED = {
    "transfer_stuck": "transfers given up as stuck (sent again until out of tries)",
    "clone_failed": "books that failed for good on their way to a peer",
    "ingest_gave_up": "ingests given up after repeated crashes",
    "mover_stalled": "mover tasks stalled until an operator acts",
    "upload_expired": "uploads failed because no byte arrived for hours",
}
PER_TICK = 500


@dg.sensor(
    name="event_alerts_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Forwards stuck and failed transfers from the event log to the notifier.",
)
def event_alerts_sensor(
    context: dg.SensorEvaluationContext,
    catalogue: CatalogueResource,
    notifier: NotifierResource,
) -> dg.SensorResult:
    # Only events older than the catalogue's commit lag: on PostgreSQL an event may take a
    # lower id and commit later; a cursor past it would never see it.
    settled = datetime.now(UTC) - timedelta(
        seconds=catalogue.settings.transfer.catalogue_lag_seconds
    )
    with catalogue.session() as session:
        since = int(context.cursor or 0)
        newest = (
            session.scalar(
                select(func.max(Event.id)).where(Event.id > since, Event.created_at <= settled)
            )
            or since
        )
        if context.cursor is None:
            return dg.SensorResult(
                skip_reason="starting after the newest event", cursor=str(newest)
            )
        rows = session.execute(
            select(Event.id, Event.kind, Event.message)
            .where(
                Event.id > int(context.cursor),
                Event.id <= newest,
                Event.kind.in_(list(FORWARDED)),
            )
            .order_by(Event.id)
            .limit(PER_TICK)
        ).all()
    by_kind: dict[str, list[str]] = {}
    for _, kind, message in rows:
        by_kind.setdefault(kind, []).append(message)
    for kind, messages in by_kind.items():
        listed = "\n".join(message[:300] for message in messages[:20])
        more = f"\n... and {len(messages) - 20} more" if len(messages) > 20 else ""
        notifier.alert(
            f"{len(messages)} {FORWARDED[kind]}",
            f"{listed}{more}\n`librarian events list --kind {kind}` shows them.",
            severity=Severity.ERROR,
            kind=f"{kind}_alert",
        )
    # Past everything read; with a full page, only up to its last row.
    cursor = rows[-1][0] if len(rows) == PER_TICK else max(newest, int(context.cursor))
    return dg.SensorResult(
        skip_reason=f"{len(rows)} events forwarded" if not rows else None,
        cursor=str(cursor),
    )


SENSORS = [run_failure_alerts, peer_health_sensor, event_alerts_sensor]
