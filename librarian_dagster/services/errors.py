"""Errors that services raise; each knows the HTTP status it means.

The API turns them into RFC 9457 problem details, the CLI into one line and a non-zero exit
code, Dagster ops into a failed step with the same message. Raising one means nothing changed:
services check before they write.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request that cannot be done as asked."""

    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(ServiceError):
    status = 400
    title = "Invalid request"


class NotFound(ServiceError):
    status = 404
    title = "Not found"


class Conflict(ServiceError):
    status = 409
    title = "Conflict"


class InsufficientStorage(ServiceError):
    status = 507
    title = "Insufficient storage"


class Unavailable(ServiceError):
    status = 503
    title = "Unavailable"


class CatalogueNotReady(Unavailable):
    """The catalogue is missing, unreachable, empty or at another schema revision."""

    title = "Catalogue not ready"


class TooLarge(ServiceError):
    """Over a size limit that no store's free space would change (413)."""

    status = 413
    title = "Content too large"


class TooManyRequests(ServiceError):
    """Over a per-user or per-client limit; ``retry_after`` says when to try again (429)."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class UnsupportedMediaType(ServiceError):
    status = 415
    title = "Unsupported media type"


class Forbidden(ServiceError):
    """The caller may not act on this (a callback about a transfer that is not theirs)."""

    status = 403
    title = "Forbidden"


class PeerCallFailed(ServiceError):
    """A peer did not answer as it should (down, refusing us, or not who it should be).

    ``peer_status`` is the HTTP status the peer answered, None when it did not answer.
    """

    status = 502
    title = "Bad gateway"

    def __init__(self, detail: str, peer_status: int | None = None) -> None:
        super().__init__(detail)
        self.peer_status = peer_status
