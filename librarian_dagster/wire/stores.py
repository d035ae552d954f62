"""``/stores`` (admin): the stores a librarian writes to, their drives and their space."""

from __future__ import annotations

from pydantic import Field

from librarian_dagster.states import DriveState, StoreKind
from librarian_dagster.wire.common import JsonBool, RequestModel, ResponseModel


class StoreInfo(ResponseModel):
    name: str
    kind: StoreKind
    root: str
    enabled: bool
    ingestable: bool
    declared: bool = Field(description="False once the config no longer declares it.")
    state: DriveState | None = Field(description="A sneaker store's drive: where it is.")
    drive_uuid: str | None = Field(description="The drive provisioned for a sneaker store.")
    capacity_bytes: int | None
    books: int = Field(description="Copies recorded there.")
    used_bytes: int | None = Field(
        description="In use on its file system; for a drive, what its books take. Null when "
        "the store cannot be used."
    )
    free_bytes: int | None = Field(
        description="What a new book may still use (reserve and capacity deducted)."
    )
    problem: str | None = Field(description="Why it cannot be used now, if it cannot.")


class StoreList(ResponseModel):
    stores: list[StoreInfo]


class StoreUpdate(RequestModel):
    """Let new data go into a store, or stop it (its copies stay recorded)."""

    enabled: JsonBool
