"""The ``notifier`` resource: one way for every flow to tell operators something is wrong.

Every alert is an operator event in the catalogue (``/api/v2/events``, ``librarian events
list``), grouped by cause: the same ``kind`` and ``subject`` raised while its event is open
only counts (``services.events.raise_event``). With ``[notify]`` in the config and its token
in the environment variable it names (``slack_token_env``), a *new* cause is also posted to
``slack_channel`` through dagster-slack's client, and a cause still open after
``remind_hours`` is posted once more as a reminder with its count: a peer down for a week
is a few messages, not one per sensor tick. Without ``[notify]``, or when Slack refuses or
cannot be reached, the event says so (``details.not_sent``) and a warning is logged; the next
sighting of the cause tries Slack again. An alert is never lost because a chat service is
down. The token is read when an alert is sent, never at load, and never logged.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster_slack import SlackResource

from librarian_dagster.catalogue.models import Event
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.events import raise_event
from librarian_dagster.states import Severity

log = logging.getLogger(__name__)


class NotifierResource(CatalogueResource):
    """``notifier.alert(title, text)``: returns where it went (``slack``, ``events``,
    ``grouped`` when the cause was already open and no reminder was due)."""

    def slack_client(self, token: str) -> Any:
        """The Slack ``WebClient`` alerts are posted with (tests replace it)."""
        return SlackResource(token=token).get_client()

    def alert(
        self,
        title: str,
        text: str,
        *,
        severity: Severity = Severity.ERROR,
        subject: str | None = None,
        kind: str = "alert",
        details: dict[str, Any] | None = None,
    ) -> str:
        with self.session() as session:
            raised = raise_event(
                session, severity, kind, f"{title}: {text}", subject=subject, details=details
            )
            event_id, count = raised.event.id, raised.event.count
            last_sent = raised.event.notified_at
        # A cause that got worse (a warning become an error) is told again at once.
        told = raised.new or raised.escalated
        return self._deliver(event_id, title, text, told, count, last_sent)

    def announce(self, event_id: int, title: str, text: str) -> str:
        """Send an event a service already raised (``alert`` without raising it again)."""
        with self.session() as session:
            event = session.get(Event, event_id)
            if event is None:
                return "events"
            count, last_sent = event.count, event.notified_at
        return self._deliver(event_id, title, text, count == 1, count, last_sent)

    def _deliver(
        self,
        event_id: int,
        title: str,
        text: str,
        new: bool,
        count: int,
        last_sent: datetime | None,
    ) -> str:
        now = datetime.now(UTC)
        notify = self.settings.notify
        remind = timedelta(hours=notify.remind_hours) if notify is not None else None
        # Without [notify] there is nothing to retry or remind: the event is the alert.
        due = new or (remind is not None and (last_sent is None or now - last_sent > remind))
        if not due:
            log.info("%s: still open (event %s, seen %s times)", title, event_id, count)
            return "grouped"
        if count > 1:
            text = f"{text}\n(still open: seen {count} times; event {event_id})"
        problem = self._post(title, text)
        with self.session() as session:
            event = session.get(Event, event_id)
            if event is not None and problem is None:
                event.notified_at = now
            elif event is not None:
                event.details = {**(event.details or {}), "not_sent": problem}
        if problem is None:
            return "slack"
        log.warning("%s: %s (%s; kept as operator event %s)", title, text, problem, event_id)
        return "events"

    def _post(self, title: str, text: str) -> str | None:
        """Post to Slack; None when it took the message, else why not."""
        notify = self.settings.notify
        if notify is None:
            return "no [notify] section in the config"
        token = os.environ.get(notify.slack_token_env)
        if not token:
            return f"{notify.slack_token_env} is not set"
        try:
            self.slack_client(token).chat_postMessage(
                channel=notify.slack_channel, text=f"*{title}*\n{text}"
            )
        except Exception as error:  # Slack down or refusing: the event keeps it
            return f"Slack did not take it ({type(error).__name__})"
        return None
