"""The Litestar application: wiring of settings, catalogue, auth, problem details, routes.

``create_app`` is the factory uvicorn runs (``--factory``); it reads settings the same way the
CLI does, so the API, the CLI and Dagster always agree on configuration.
"""

from __future__ import annotations

import logging
import math
import os
from http import HTTPStatus

from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from librarian_dagster import __version__
from librarian_dagster.api.auth import UNAUTHENTICATED_PATHS, Authenticator, BasicAuthMiddleware
from librarian_dagster.api.dependencies import app_dependencies
from librarian_dagster.api.housekeeping import housekeeping
from librarian_dagster.api.login_throttle import LoginThrottle
from librarian_dagster.api.openapi import PROBLEM_JSON, document_problems, openapi_config
from librarian_dagster.api.requests import LibrarianRequest, options_answer
from librarian_dagster.api.routes import (
    clones,
    corrupt,
    events,
    files,
    peers,
    ping,
    sneaker,
    transfers,
    uploads,
    users,
)
from librarian_dagster.api.routes import stores as store_routes
from librarian_dagster.api.upload_slots import UploadSlots
from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.peer_links import http_links
from librarian_dagster.services.accounts import password_hasher
from librarian_dagster.services.errors import ServiceError, TooManyRequests
from librarian_dagster.services.ingest_launcher import IngestLauncher
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings, load_settings
from librarian_dagster.wire import API_PREFIX

log = logging.getLogger(__name__)


def _problem(status: int, title: str, detail: str) -> Response[dict[str, object]]:
    return Response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM_JSON,
    )


def _service_error(request: Request, error: ServiceError) -> Response[dict[str, object]]:
    if error.status >= 500:  # no room in any store, a dependency down: operators should know
        log.warning("%s %s: %d %s", request.method, request.url.path, error.status, error.detail)
    response = _problem(error.status, error.title, error.detail)
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


def _http_error(request: Request, error: HTTPException) -> Response[dict[str, object]]:
    """Litestar's own errors (401, 403, 404, 405, 413, validation) as problem details."""
    if error.status_code >= 500:  # Litestar's internal errors: logged, detail not sent
        log.error("%s %s: %d %s", request.method, request.url.path, error.status_code, error.detail)
        return _problem(
            error.status_code,
            HTTPStatus(error.status_code).phrase,
            "the librarian hit an unexpected error; its log has the details",
        )
    response = _problem(error.status_code, HTTPStatus(error.status_code).phrase, str(error.detail))
    if error.extra:  # validation errors: which field, what is wrong
        response.content["errors"] = error.extra
    if error.headers:
        response.headers.update(error.headers)
    return response


def _unexpected_error(request: Request, error: Exception) -> Response[dict[str, object]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal server error",
        "the librarian hit an unexpected error; its log has the details",
    )


def default_launcher(settings: LibrarianSettings, catalogue: Catalogue) -> IngestLauncher | None:
    """Launch ingest runs at commit when running under ``librarian serve`` (Dagster around).

    The launchers are the orchestrator's (``jobs.ingest_launchers``); they import Dagster
    only when they first need it, so the API answers meanwhile.
    """
    if not settings.ingest.launch_on_commit or not os.environ.get("DAGSTER_HOME"):
        return None
    from librarian_dagster.jobs.ingest_launchers import InProcessRunLauncher, QueuedRunLauncher

    if settings.ingest.commit_runs == "api":
        return InProcessRunLauncher(catalogue, settings)
    return QueuedRunLauncher(
        catalogue, settings.ingest, settings.dagster.webserver_host, settings.dagster.webserver_port
    )


def create_app(
    settings: LibrarianSettings | None = None, launcher: IngestLauncher | None = None
) -> Litestar:
    settings = settings or load_settings()
    catalogue = get_catalogue(settings.catalogue_url)
    launcher = launcher or default_launcher(settings, catalogue)
    authenticator = Authenticator(
        catalogue, password_hasher(settings.security), settings.api.auth_cache_seconds
    )
    stores = open_stores(settings)
    slots = UploadSlots(settings.api.max_uploads_per_user, settings.api.max_concurrent_uploads)
    app = Litestar(
        route_handlers=[
            ping.router(),
            users.router(),
            uploads.router(),
            files.router(),
            corrupt.router(),
            events.router(),
            peers.router(),
            store_routes.router(),
            peers.account_router(),
            clones.router(catalogue),
            sneaker.router(catalogue),
            transfers.router(),
        ],
        dependencies=app_dependencies(
            settings,
            catalogue,
            stores,
            launcher,
            slots,
            http_links(settings.transfer.peer_timeout_seconds),
        ),
        lifespan=[housekeeping(settings, catalogue, stores, slots)],
        # The pool's idle connections go with the app (the engine stays usable).
        on_shutdown=[catalogue.dispose],
        middleware=[
            DefineMiddleware(
                BasicAuthMiddleware,
                authenticator=authenticator,
                throttle=LoginThrottle(free=settings.api.login_failures_before_delay),
                exclude=UNAUTHENTICATED_PATHS,
            )
        ],
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        openapi_config=openapi_config(__version__, site=settings.name),
        request_class=LibrarianRequest,
        request_max_body_size=settings.api.max_json_body_bytes,
        # Litestar's own logger only: the process (uvicorn, a test) owns the root logger.
        # Refusals (401, 403, 409, ...) are answers, not errors: no traceback in the log for
        # them; _unexpected_error logs what really went wrong.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="never"),
        debug=False,
    )
    document_problems(app, unauthenticated=[f"{API_PREFIX}/ping"])
    app.before_request = options_answer(app)
    return app


__all__ = ["API_PREFIX", "create_app"]
