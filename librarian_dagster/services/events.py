"""The operator-facing event log: what went wrong or needs a human, kept until resolved."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from librarian_dagster.catalogue.models import Event
from librarian_dagster.states import Severity


def record_event(
    session: Session,
    severity: Severity,
    kind: str,
    message: str,
    *,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    event = Event(severity=severity, kind=kind, message=message, subject=subject, details=details)
    session.add(event)
    session.flush()
    return event
