"""What every wire model shares: the API prefix, strict requests, ids, problem details."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

API_PREFIX = "/api/v2"

#: Largest catalogue id: a signed 64-bit integer, what SQLite and PostgreSQL ``BIGINT`` hold.
MAX_ID = 2**63 - 1


def _exact_int(value: Any) -> Any:
    # Not pydantic's StrictInt: Litestar validates bodies with ``strict=False``, which
    # overrides a field's own strictness.
    if type(value) is not int:
        raise ValueError(f"must be a JSON integer, not {type(value).__name__}")
    return value


def _exact_bool(value: Any) -> Any:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, not {type(value).__name__}")
    return value


JsonInt = Annotated[int, BeforeValidator(_exact_int)]
JsonBool = Annotated[bool, BeforeValidator(_exact_bool)]

#: A catalogue id as the wire carries it: a JSON integer (not a string, not a boolean),
#: 1 to 2^63-1, so no id can overflow the database's integer.
Id = Annotated[JsonInt, Field(ge=1, le=MAX_ID)]
#: A byte count: a JSON integer, 0 to 2^63-1.
ByteCount = Annotated[JsonInt, Field(ge=0, le=MAX_ID)]


class RequestModel(BaseModel):
    """A request body or query: unknown fields are an error, not a silent default.

    Numbers and booleans are exact (``Id``, ``ByteCount``, ``JsonInt``, ``JsonBool``):
    ``"1"`` or ``true`` is not a size. (The whole model is not ``strict``: request bodies are
    validated from decoded JSON, where a strict model would refuse ISO timestamps and enum
    values.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(ResponseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    # Validation errors: which field, what is wrong.
    errors: list[dict[str, object]] | None = None


def first_problem(error: ValidationError) -> str:
    """The first thing wrong with a model's input, in one line: ``field: what is wrong``."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{field}: {message}" if field else message
