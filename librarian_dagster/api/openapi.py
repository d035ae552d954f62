"""The OpenAPI document says what the API really answers: every status, problem details, auth.

Schemathesis checks the live API against this document (``tests/test_api_fuzz.py``), so what
is written here is tested, not decoration. Three sources of statuses:

- what every route can answer, added by :func:`document_problems` to each handler when the
  app is built, so a route added later is documented without anyone remembering to: 400
  (validation), 500; on guarded routes 401, 403, 429 (login throttle); on routes with a JSON
  body 413 (over the body limit) and 415 (not ``application/json``);
- what one route answers besides, declared on it with ``responses=problems(404, 409, ...)``;
- the success status and model, from the handler's signature.

Every error is ``application/problem+json`` with the :class:`wire.Problem` model.

The viewer at ``/schema`` is Swagger UI, whose files come from a pinned package
(``swagger-ui-bundle-v2``) and are served by the app under ``/schema/assets/``: the docs render
with no request to any other host (no CDN, no web fonts, no remote favicon), as
``tests/test_api_docs.py`` checks in a browser cut off from the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

from litestar import Litestar, Router, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath
from litestar.response import File
from litestar.routes import HTTPRoute
from swagger_ui_bundle import swagger_ui_path

from librarian_dagster.wire import Problem

PROBLEM_JSON = "application/problem+json"
SCHEMA_PATH = "/schema"  # unauthenticated: auth.UNAUTHENTICATED_PATHS, assets included
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
# The package's files the docs page loads, and their media types; no other file is served.
VIEWER_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
SECURITY_SCHEME = "basic"
# Statuses no route chooses: what validation, the auth middleware and the app add.
_EVERY_ROUTE = (400, 500)
_GUARDED = (401, 403, 429)
_JSON_BODY = (413, 415)
_DESCRIPTIONS = {
    400: "Bad request: the problem's errors say which field and why",
    401: "No credentials, or a wrong user name or password",
    403: "The account's level is too low for this route",
    404: "No such object (or not one the caller may see)",
    408: "The request body stopped arriving",
    409: "Conflicts with the current state",
    413: "Over a size limit",
    415: "The body is not of a type this route takes",
    429: "Too many requests for now; Retry-After says when to try again",
    500: "An unexpected error; the librarian's log has the details",
    503: "A dependency the request needs is unavailable",
    507: "No store has room",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Problem-detail responses for these statuses, to pass as a handler's ``responses``."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def _statuses_of(handler: HTTPRouteHandler, guarded: bool) -> Iterable[int]:
    yield from _EVERY_ROUTE
    if guarded:
        yield from _GUARDED
    if "data" in handler.parsed_fn_signature.parameters:
        yield from _JSON_BODY


def document_problems(app: Litestar, unauthenticated: Iterable[str]) -> None:
    """Add the statuses every route can answer to each handler's documented responses."""
    public = tuple(unauthenticated)
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        guarded = route.path not in public
        for handler in route.route_handlers:
            if handler.http_methods == {"OPTIONS"}:
                continue
            declared = dict(handler.responses or {})
            handler.responses = {**problems(*_statuses_of(handler, guarded)), **declared}
            if not guarded:
                handler.security = [{}]


class LocalSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI at ``/schema``, its scripts, stylesheet and favicon served by the app."""

    def __init__(self) -> None:
        super().__init__(
            path=["/", "/swagger"],
            js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)

        @get("/assets/{name:str}", include_in_schema=False, sync_to_thread=False)
        def viewer_asset(name: FromPath[str]) -> File:
            media_type = VIEWER_ASSETS.get(name)
            if media_type is None:
                raise NotFoundException(f"no asset {name!r}")
            path = swagger_ui_path / name
            return File(path=path, media_type=media_type, content_disposition_type="inline")

        router.register(viewer_asset)


def openapi_config(version: str, site: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="librarian",
        version=version,
        description=f"The REST API of the librarian of site {site}.",
        path=SCHEMA_PATH,
        render_plugins=[LocalSwaggerRenderPlugin()],
        components=Components(
            security_schemes={
                SECURITY_SCHEME: SecurityScheme(
                    type="http", scheme="basic", description="An account of this librarian"
                )
            }
        ),
        security=[{SECURITY_SCHEME: []}],
    )


@dataclass
class StreamedBodyOperation(Operation):
    """The operation of a route that streams its body itself (no ``data`` parameter)."""

    # A class attribute, not a field: fields of an Operation are written into the document.
    media_types: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            content={media: OpenAPIMediaType(schema=binary) for media in self.media_types},
            required=True,
            description="The bytes: a file, or a tar stream of a directory",
        )


def streamed_body(*accepted: str) -> type[Operation]:
    """An ``operation_class`` documenting a raw request body of these media types."""

    @dataclass
    class _Operation(StreamedBodyOperation):
        media_types: ClassVar[tuple[str, ...]] = accepted

    return _Operation
