"""What every wire model shares: the API prefix, strict requests, problem details."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

API_PREFIX = "/api/v2"


class RequestModel(BaseModel):
    """A request body or query: unknown fields are an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(ResponseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
