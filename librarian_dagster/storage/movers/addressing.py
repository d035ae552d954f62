"""How a mover addresses a local path: as itself (the local mover) or in a Globus collection.

A site's Globus collection shows its host's files under some root: ``[globus] local_root``
is the local directory that appears as ``path_prefix`` in the collection (both "/" by
default: the collection shows the host's own paths). Both ends of a clone use this: the
sender for the copy it reads, the receiver for the staging path it answers with.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath

from librarian_dagster.storage.errors import PathEscapeError


def collection_path(local: Path | str, *, local_root: Path | str, path_prefix: str) -> str:
    """``local`` as the collection addresses it; a path outside ``local_root`` is refused."""
    path = Path(os.path.abspath(local))
    root = Path(os.path.abspath(local_root))
    if not path.is_relative_to(root):
        raise PathEscapeError(f"{path} is not under the Globus collection's root {root}")
    relative = path.relative_to(root).as_posix()
    prefix = "/" + path_prefix.strip("/")
    joined = posixpath.join(prefix, relative) if relative != "." else prefix
    return str(PurePosixPath(joined))


def local_address(local: Path | str) -> str:
    """The local mover addresses paths as they are on this host (absolute)."""
    return os.path.abspath(local)
