"""What every wire model shares: the API prefix, strict requests, problem details."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

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


def first_problem(error: ValidationError) -> str:
    """The first thing wrong with a model's input, in one line: ``field: what is wrong``."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{field}: {message}" if field else message
