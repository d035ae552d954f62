"""The API's request class (how a JSON body is read) and its answer to OPTIONS.

Two rules live here so that no route can forget them:

- a JSON body must say so (``Content-Type: application/json``, 415 otherwise): an HTML form
  on another site can send ``text/plain`` with the browser's cached Basic credentials, but it
  cannot send ``application/json`` without a CORS preflight, which this API never grants;
- a body nested too deeply to decode (100,000 times ``[``) is a bad request (400), not a
  ``RecursionError`` and a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, Request, Response
from litestar.exceptions import ClientException, HTTPException
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT, HTTP_415_UNSUPPORTED_MEDIA_TYPE

JSON_MEDIA_TYPE = "application/json"


def is_json(media_type: str) -> bool:
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``)."""
    media_type = media_type.lower()
    return media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class LibrarianRequest(Request):  # type: ignore[type-arg]
    async def json(self) -> Any:
        media_type, _ = self.content_type
        if not is_json(media_type):
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=(
                    f"this route takes a JSON body (Content-Type: {JSON_MEDIA_TYPE}), "
                    f"not {media_type or 'a body without a Content-Type'}"
                ),
            )
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(detail="the JSON body is nested too deeply") from None


def options_answer(app: Litestar) -> Callable[[Request], Awaitable[Response[None] | None]]:
    """A ``before_request`` hook answering OPTIONS with every method of the path in ``Allow``.

    Litestar's own OPTIONS handler lists only the methods of the first handler registered on
    a path (``GET /uploads/{id}`` but not ``DELETE``), which misleads a client and fails
    schemathesis' Allow check; this answers from the final routes instead.
    """
    allowed = {
        route.path_format: ", ".join(sorted(route.methods))
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }

    async def answer(request: Request) -> Response[None] | None:
        if request.method != "OPTIONS":
            return None
        methods = allowed.get(request.scope.get("path_template", ""))  # type: ignore[call-overload]
        if methods is None:
            return None
        return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": methods})

    return answer
