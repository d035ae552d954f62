"""The Python client of the librarian API (SPEC §8).

::

    from librarian_dagster.client import LibrarianClient, client_settings
    client = LibrarianClient.from_info(client_settings.connections["site-a"])
    client.upload(Path("local/dir_or_file"), Path("2026/11/25/book_0001"))  # blocks until stored
"""

from librarian_dagster.client.client import LibrarianClient, file_query
from librarian_dagster.client.errors import (
    ClientConfigError,
    ConnectionFailed,
    LibrarianError,
    UploadFailed,
    UploadFailure,
)
from librarian_dagster.client.settings import (
    ClientSettings,
    ConnectionInfo,
    client_settings,
    load_client_settings,
)

__all__ = [
    "ClientConfigError",
    "ClientSettings",
    "ConnectionFailed",
    "ConnectionInfo",
    "LibrarianClient",
    "LibrarianError",
    "UploadFailed",
    "UploadFailure",
    "client_settings",
    "file_query",
    "load_client_settings",
]
