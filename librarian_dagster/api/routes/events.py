"""``/api/v2/events``: the operator event log (admin).

``GET`` lists open events newest first, cursor-paged, filtered by severity (that one and
graver), kind, subject and creation time; ``include_resolved`` shows the history.
``POST /events/resolve`` closes events by id with a note (all or nothing). Resolving is
also how an operator lifts what an event holds: a ``burst_guard`` event, while open, keeps
automatic repair and deletion off its store.
"""

from __future__ import annotations

from datetime import datetime

from litestar import Request, Router, get, post
from litestar.params import FromQuery, JSONBody

from librarian_dagster.api.auth import requires
from librarian_dagster.api.dependencies import CatalogueDep
from librarian_dagster.api.openapi import problems
from librarian_dagster.services import events
from librarian_dagster.services.errors import InvalidRequest
from librarian_dagster.states import Severity, UserLevel
from librarian_dagster.wire import API_PREFIX, MAX_PAGE
from librarian_dagster.wire.events import EventList, EventResolve, EventResolved


@get("/events", operation_id="listEvents", sync_to_thread=True, summary="Operator events")
def list_events(
    catalogue: CatalogueDep,
    include_resolved: FromQuery[bool] = False,
    severity: FromQuery[Severity | None] = None,
    kind: FromQuery[str | None] = None,
    subject: FromQuery[str | None] = None,
    since: FromQuery[datetime | None] = None,
    limit: FromQuery[int] = 100,
    cursor: FromQuery[str | None] = None,
) -> EventList:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since must carry a time zone (e.g. 2026-12-07T00:00:00Z)")
    with catalogue.session() as session:
        rows, next_cursor = events.list_events(
            session,
            include_resolved=include_resolved,
            severity=severity,
            kind=kind,
            subject=subject,
            since=since,
            limit=limit,
            cursor=cursor,
        )
        return EventList(
            events=[events.event_info(row) for row in rows],
            open=events.count_open(session),
            next_cursor=next_cursor,
        )


@post(
    "/events/resolve",
    operation_id="resolveEvents",
    sync_to_thread=True,
    status_code=200,
    responses=problems(404),
    summary="Close operator events",
)
def resolve_events(
    request: Request, catalogue: CatalogueDep, data: JSONBody[EventResolve]
) -> EventResolved:
    with catalogue.session() as session:
        closed = events.resolve_events(session, data.ids, request.user.name, data.note)
        return EventResolved(events=[events.event_info(event) for event in closed])


def router() -> Router:
    return Router(
        path=API_PREFIX,
        route_handlers=[list_events, resolve_events],
        guards=[requires(UserLevel.ADMIN)],
        tags=["events"],
    )
