"""The API's request class: how a JSON body is read, for every route that takes one.

Two rules live here so that no route can forget them:

- a JSON body must say so (``Content-Type: application/json``, 415 otherwise): an HTML form
  on another site can send ``text/plain`` with the browser's cached Basic credentials, but it
  cannot send ``application/json`` without a CORS preflight, which this API never grants;
- a body nested too deeply to decode (100,000 times ``[``) is a bad request (400), not a
  ``RecursionError`` and a 500.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

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
