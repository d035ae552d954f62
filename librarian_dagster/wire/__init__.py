"""Wire models: the JSON bodies (and the search query) of the REST API, one per flow.

Shared by the server (``api/``, ``services/``) and the client (``client/``, ``cli/``).
Importing them loads pydantic and ``librarian_dagster.states`` only: no SQLAlchemy, no
Litestar, no Dagster (a test keeps it so). Request models forbid unknown fields.
"""

from librarian_dagster.wire.clones import (
    CloneAck,
    CloneAcks,
    CloneComplete,
    CloneFail,
    CloneIds,
    CloneItem,
    CloneQuery,
    CloneStageRequest,
    CloneStageResponse,
    CloneState,
    CloneStatusRequest,
    CloneStatusResponse,
    CompletedClone,
    FailedClone,
    StagedClone,
)
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
from librarian_dagster.wire.peers import (
    AccountInfo,
    PeerCheck,
    PeerCreate,
    PeerInfo,
    PeerList,
    PeerUpdate,
)
from librarian_dagster.wire.ping import CatalogueHealth, PingResponse, StoreHealth
from librarian_dagster.wire.stores import StoreInfo, StoreList, StoreUpdate
from librarian_dagster.wire.transfers import TransferInfo, TransferList
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
    "AccountInfo",
    "ByteCount",
    "CatalogueHealth",
    "CloneAck",
    "CloneAcks",
    "CloneComplete",
    "CloneFail",
    "CloneIds",
    "CloneItem",
    "CloneQuery",
    "CloneStageRequest",
    "CloneStageResponse",
    "CloneState",
    "CloneStatusRequest",
    "CloneStatusResponse",
    "CompletedClone",
    "CorruptCopy",
    "CorruptDismiss",
    "CorruptList",
    "FailedClone",
    "FileInfo",
    "FileQuery",
    "FileSearchResult",
    "FileSummary",
    "Id",
    "InstanceInfo",
    "JsonBool",
    "JsonInt",
    "PeerCheck",
    "PeerCreate",
    "PeerInfo",
    "PeerList",
    "PeerUpdate",
    "PingResponse",
    "Problem",
    "RemoteInstanceInfo",
    "RequestModel",
    "ResponseModel",
    "StagedClone",
    "StoreHealth",
    "StoreInfo",
    "StoreList",
    "StoreUpdate",
    "TransferInfo",
    "TransferList",
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
