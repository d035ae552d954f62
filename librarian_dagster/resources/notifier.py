"""The ``notifier`` resource: alerts for operators, to Slack when configured, else the event log.

With ``[notify]`` in the config and its token in the environment variable it names
(``slack_token_env``), an alert is posted to ``slack_channel`` through dagster-slack's
client. Without it, or when Slack refuses or cannot be reached, the alert becomes an
operator event (``/api/v2/events``, ``librarian events list``) and a warning in the log:
an alert is never lost because a chat service is down. The token is read when an alert is
sent, never at load, and never logged.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dagster_slack import SlackResource

from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.events import record_event
from librarian_dagster.states import Severity

log = logging.getLogger(__name__)


class NotifierResource(CatalogueResource):
    """``notifier.alert(title, text)``: returns where the alert went (``slack``, ``events``)."""

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
    ) -> str:
        notify = self.settings.notify
        problem = "no [notify] section in the config"
        if notify is not None:
            token = os.environ.get(notify.slack_token_env)
            if not token:
                problem = f"{notify.slack_token_env} is not set"
            else:
                try:
                    self.slack_client(token).chat_postMessage(
                        channel=notify.slack_channel, text=f"*{title}*\n{text}"
                    )
                    return "slack"
                except Exception as error:  # Slack down or refusing: fall back, never lose it
                    problem = f"Slack did not take it ({type(error).__name__})"
        log.warning("%s: %s (%s; kept as an operator event)", title, text, problem)
        with self.session() as session:
            record_event(
                session,
                severity,
                kind,
                f"{title}: {text}",
                subject=subject,
                details={"not_sent": problem},
            )
        return "events"
