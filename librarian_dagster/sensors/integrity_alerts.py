"""Alerts that no job raises: a run that failed, a peer that has not answered for hours.

``run_failure_alerts``: every failed run of this code location goes to the notifier,
grouped by job (the same job failing again is counted on its open event, not sent again
until the reminder is due; ``resources.notifier``).

``peer_health_sensor`` (every 5 minutes): peers down for longer than ``[transfer]
peer_unreachable_alert_hours`` get a grouped ``peer_unreachable`` alert; a peer that answers
again has its event resolved (``services.peer_health``). Both only tell; they start nothing.
"""

from datetime import UTC, datetime

import dagster as dg

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


SENSORS = [run_failure_alerts, peer_health_sensor]
