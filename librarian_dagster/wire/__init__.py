"""Wire models: the JSON bodies (and the search query) of the REST API, one per flow.

Shared by the server (``api/``, ``services/``) and the client (``client/``, ``cli/``).
Importing them loads pydantic and ``librarian_dagster.states`` only: no SQLAlchemy, no
Litestar, no Dagster (a test keeps it so). Request models forbid unknown fields.
"""

from librarian_dagster.wire.common import (
    API_PREFIX,
    MAX_ID,
    ByteCount,
    Id,
    JsonBool,
    JsonInt,
    Problem,
    RequestModel,
    ResponseModel,
    first_problem,
)
from librarian_dagster.wire.corrupt import CorruptCopy, CorruptDismiss, CorruptList
from librarian_dagster.wire.files import (
    MAX_PAGE,
    FileInfo,
    FileQuery,
    FileSearchResult,
    FileSummary,
    InstanceInfo,
    RemoteInstanceInfo,
)
from librarian_dagster.wire.ping import CatalogueHealth, PingResponse, StoreHealth
from librarian_dagster.wire.uploads import (
    TransferManager,
    UploadCommit,
    UploadCreate,
    UploadInfo,
    UploadList,
    UploadStatusQuery,
)
from librarian_dagster.wire.users import UserCreate, UserInfo, UserList, UserUpdate

__all__ = [
    "API_PREFIX",
    "MAX_ID",
    "MAX_PAGE",
    "ByteCount",
    "CatalogueHealth",
    "CorruptCopy",
    "CorruptDismiss",
    "CorruptList",
    "FileInfo",
    "FileQuery",
    "FileSearchResult",
    "FileSummary",
    "Id",
    "InstanceInfo",
    "JsonBool",
    "JsonInt",
    "PingResponse",
    "Problem",
    "RemoteInstanceInfo",
    "RequestModel",
    "ResponseModel",
    "StoreHealth",
    "TransferManager",
    "UploadCommit",
    "UploadCreate",
    "UploadInfo",
    "UploadList",
    "UploadStatusQuery",
    "UserCreate",
    "UserInfo",
    "UserList",
    "UserUpdate",
    "first_problem",
]
