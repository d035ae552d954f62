"""A store on a local POSIX filesystem.

Layout under the store root::

    staging/<uuid4 hex>/<last segment of the name>   uploads in progress, private
    store/<name>                                      books, read-only, global namespace

Both areas live on one filesystem so that committing a book is a single
``rename``: a reader of ``store/`` sees either nothing or the whole, fsynced,
read-only book, never a half-written one. No path handled here may leave the
root: names are validated, and no symlink inside the root is ever followed.

Namespace directories in ``store/`` (``2026/11/``) are owner-writable
(``0o755``); a book's own directories are not (``0o555``). The store relies on
that difference to refuse putting a book inside another book and to refuse
deleting a namespace directory as if it were a book.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from librarian_dagster.states import StoreKind
from librarian_dagster.storage import posix, sealing
from librarian_dagster.storage.errors import (
    AlreadyStoredError,
    NameConflictError,
    PathEscapeError,
    StagingNotFoundError,
    StoreError,
    StoreFullError,
)
from librarian_dagster.storage.health import StoreHealth, store_health, usable_bytes
from librarian_dagster.storage.names import InvalidNameError, validate_name
from librarian_dagster.storage.sneaker import require_drive_root
from librarian_dagster.storage.tree import newest_mtime_and_size, scandir_sorted

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "LeftoverStaging",
    "LocalStore",
    "StagedData",
    "StoreHealth",
]

logger = logging.getLogger(__name__)

#: Space kept free by default so that a full disk never stops the catalogue or the OS.
DEFAULT_RESERVE_BYTES = 1 << 30
STAGING_DIRNAME = "staging"
STORE_DIRNAME = "store"
# Beside each stored book, its manifest (``storage.sidecars``); "," is in no book name.
SIDECAR_SUFFIX = ",librarian.json"
LAYOUT_MODE = 0o755
STAGING_MODE = 0o770

_STAGING_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class StagedData:
    """Where an uploader writes one book before it is committed.

    ``data_path`` is the file or directory to create; its parent ``directory``
    is private to this upload and is removed by a successful commit.
    """

    staging_id: str
    directory: Path
    data_path: Path


@dataclass(frozen=True)
class LeftoverStaging:
    """A staging directory nobody has touched for a while: a failed or abandoned upload."""

    staging_id: str
    path: Path
    age_seconds: float
    bytes: int


class LocalStore:
    """A store whose books are files and directories on a local POSIX filesystem."""

    def __init__(
        self,
        name: str,
        root: Path | str,
        *,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        kind: str = StoreKind.LOCAL,
        require_mount: bool = True,
    ) -> None:
        if not name:
            raise ValueError("a store needs a name")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        self.name = name
        self.root = Path(os.path.abspath(root))
        self.kind = kind
        self.reserve_bytes = reserve_bytes
        self.require_mount = require_mount  # a sneaker store's: its root must be a mount point
        self.staging_dir = self.root / STAGING_DIRNAME
        self.store_dir = self.root / STORE_DIRNAME

    def __repr__(self) -> str:
        return f"LocalStore(name={self.name!r}, root={str(self.root)!r}, kind={self.kind!r})"

    # -- layout -----------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create ``staging/`` and ``store/``; safe to call on every start.

        A sneaker store's root is a drive's mount point: it is never created (with no drive
        mounted, that would fill the host's own disk).
        """
        if self.kind != StoreKind.SNEAKER:
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            require_drive_root(self.root, self.name, require_mount=self.require_mount)
        for directory in (self.staging_dir, self.store_dir):
            try:
                os.mkdir(directory, LAYOUT_MODE)
            except FileExistsError:
                pass
            else:
                os.chmod(directory, LAYOUT_MODE)  # the umask must not decide
            posix.require_real_dir(directory)
        if os.lstat(self.staging_dir).st_dev != os.lstat(self.store_dir).st_dev:
            raise StoreError(
                f"{self.staging_dir} and {self.store_dir} are on different filesystems; "
                "commits must be a rename"
            )

    # -- staging ----------------------------------------------------------------------

    def stage(self, name: str, size: int) -> StagedData:
        """Reserve a private staging directory for an upload of ``size`` bytes.

        Space is checked first so that a too-big upload is refused before any
        byte is sent, and before anything is created.
        """
        name = validate_name(name)
        if size < 0:
            raise ValueError("size must not be negative")
        posix.require_real_dir(self.staging_dir)
        available = self.free_bytes()
        if size > available:
            raise StoreFullError(size, available, self.name)
        staging_id = uuid.uuid4().hex
        directory = self.staging_dir / staging_id
        os.mkdir(directory, STAGING_MODE)
        os.chmod(directory, STAGING_MODE)
        return _staged_data(staging_id, directory, name)

    def staged(self, staging_id: str, name: str) -> StagedData:
        """Rebuild the :class:`StagedData` of an existing upload (e.g. in a later request)."""
        name = validate_name(name)
        directory = self._staging_path(staging_id)
        _require_staging_dir(directory)
        return _staged_data(staging_id, directory, name)

    def discard_staging(self, staging_id: str) -> None:
        """Remove an upload and everything in it, read-only or not.

        If the staging entry is not a real directory (replaced by a symlink on a shared
        filesystem, say), only the entry itself goes: whatever it points to is not ours.
        """
        directory = self._staging_path(staging_id)
        try:
            _require_staging_dir(directory)
        except PathEscapeError:
            directory.unlink()  # the link (or file) itself, never what it points to
            return
        posix.remove_tree(directory)

    def release_staging(self, staging_id: str) -> None:
        """Remove an upload's staging directory once its data has gone elsewhere.

        Only an empty directory is removed: whatever is still inside stays for inspection.
        """
        _drop_staging_dir(self._staging_path(staging_id))

    def leftover_staging(self, older_than_seconds: float) -> list[LeftoverStaging]:
        """Staging directories with nothing modified for longer than ``older_than_seconds``.

        The age is that of the newest entry anywhere in the upload, because an
        upload in progress only touches the files it is writing.
        """
        now = time.time()
        leftovers: list[LeftoverStaging] = []
        for entry in scandir_sorted(self.staging_dir):
            if not _STAGING_ID.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            try:
                newest, size = newest_mtime_and_size(path)
            except FileNotFoundError:
                continue  # discarded or committed while we looked
            age = max(0.0, now - newest)
            if age > older_than_seconds:
                leftovers.append(LeftoverStaging(entry.name, path, age, size))
        return leftovers

    # -- committing -------------------------------------------------------------------

    def commit(self, staged: StagedData, name: str) -> Path:
        """Move staged data into the store under ``name``, atomically and without overwriting.

        On any error before the rename, the store area is unchanged and the
        staged data is still in staging (possibly already made read-only).
        """
        name = validate_name(name)
        posix.require_real_dir(self.store_dir)
        destination = posix.within(self.store_dir, name)
        source = self._check_staged(staged)
        top = sealing.lstat_staged_data(source)
        if self._check_parents(name) is not None:
            raise AlreadyStoredError(f"{name!r} is already stored in {self.name!r}")
        tree = sealing.scan(source, top)
        sealing.seal(tree)
        created = self._make_parents(name)
        try:
            posix.within(self.store_dir, name)  # nothing was swapped in while creating parents
            _move_noreplace(source, destination, name)
        except BaseException:
            posix.remove_empty_dirs(created)
            raise
        if tree.dirs:
            # Moving a directory to another parent needs write permission on it
            # (its '..' changes), so its own mode is set only now.
            top_dir = tree.dirs[0]
            sealing.seal_entry(
                sealing.Entry(destination, top_dir.device, top_dir.inode), sealing.DIR_MODE
            )
        posix.fsync_dir(destination.parent)
        _drop_staging_dir(staged.directory)
        return destination

    # -- reading and deleting ---------------------------------------------------------

    def path_for(self, name: str) -> Path:
        """The path ``name`` has (or would have) in the store area; it need not exist."""
        return posix.within(self.store_dir, name)

    def exists(self, name: str) -> bool:
        """Whether something is stored under ``name``."""
        return os.path.lexists(posix.within(self.store_dir, name))

    def delete(self, name: str) -> None:
        """Remove a stored book (file or read-only tree), its sidecar, and the namespace
        dirs it leaves empty."""
        name = validate_name(name)
        path = posix.within(self.store_dir, name)
        found = self._check_parents(name)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, f"{name!r} is not stored", str(path))
        if stat.S_ISDIR(found.st_mode):
            if found.st_mode & stat.S_IWUSR:
                raise NameConflictError(f"{name!r} is a namespace directory, not a stored book")
            posix.remove_tree(path)
        else:
            os.unlink(path)
        posix.remove_if_present(path.with_name(path.name + SIDECAR_SUFFIX))
        posix.fsync_dir(path.parent)
        self._prune_empty_parents(path.parent)

    # -- capacity and health ----------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes an upload may still use: free space for unprivileged users minus the reserve."""
        return usable_bytes(os.statvfs(self.root), self.reserve_bytes)

    def used_bytes(self) -> int:
        """Bytes in use on the store's file system (all of it, not only this store's books)."""
        vfs = os.statvfs(self.root)
        return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize

    def health(self) -> StoreHealth:
        """A snapshot for monitoring; never raises for a missing or broken root."""
        return store_health(self)

    # -- helpers ----------------------------------------------------------------------

    def _staging_path(self, staging_id: str) -> Path:
        """The directory of an upload; anything but a uuid4 hex could point elsewhere."""
        if not isinstance(staging_id, str) or not _STAGING_ID.fullmatch(staging_id):
            raise PathEscapeError(f"not a staging id: {str(staging_id)[:80]!r}")
        return self.staging_dir / staging_id

    def _check_staged(self, staged: StagedData) -> Path:
        """Return the data path of ``staged`` after checking it really is inside our staging."""
        directory = self._staging_path(staged.staging_id)
        data_path = Path(staged.data_path)
        if Path(staged.directory) != directory or data_path.parent != directory:
            raise PathEscapeError(f"staged data {staged!r} is not in {self.staging_dir}")
        try:
            validate_name(data_path.name)
        except InvalidNameError as exc:
            raise PathEscapeError(f"bad staged data path {str(data_path)!r}: {exc}") from exc
        _require_staging_dir(directory)
        return data_path

    def _check_parents(self, name: str) -> os.stat_result | None:
        """Refuse a name below a stored book; return the stat of ``name`` if it exists."""
        destination = self.store_dir.joinpath(*name.split("/"))
        for component, status in posix.existing_components(self.store_dir, name):
            if component == destination:
                return status
            relative = component.relative_to(self.store_dir).as_posix()
            if not stat.S_ISDIR(status.st_mode):
                raise NameConflictError(f"{name!r}: {relative!r} is a stored file")
            if not status.st_mode & stat.S_IWUSR:
                raise NameConflictError(f"{name!r} would be inside the stored book {relative!r}")
        return None

    def _make_parents(self, name: str) -> list[Path]:
        """Create the namespace directories above ``name``; return those created, in order."""
        created: list[Path] = []
        current = self.store_dir
        try:
            for part in name.split("/")[:-1]:
                current = current / part
                try:
                    os.mkdir(current, LAYOUT_MODE)
                except FileExistsError:
                    pass
                else:
                    created.append(current)
                    os.chmod(current, LAYOUT_MODE)
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    raise PathEscapeError(f"{current} is not a directory")
        except BaseException:
            posix.remove_empty_dirs(created)
            raise
        for directory in created:
            posix.fsync_dir(directory.parent)  # each new entry durable, not only the book's
        return created

    def _prune_empty_parents(self, directory: Path) -> None:
        """Remove empty namespace directories from ``directory`` up to, not including, store/."""
        while directory != self.store_dir and directory.is_relative_to(self.store_dir):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = directory.parent


def _staged_data(staging_id: str, directory: Path, name: str) -> StagedData:
    return StagedData(staging_id, directory, directory / name.rsplit("/", 1)[-1])


def _require_staging_dir(directory: Path) -> None:
    """Refuse an upload directory that is gone or is not a real directory."""
    try:
        status = os.lstat(directory)
    except FileNotFoundError:
        raise StagingNotFoundError(f"no staging directory {directory.name}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise PathEscapeError(f"staging entry {directory.name} is not a directory")


def _move_noreplace(source: Path, destination: Path, name: str) -> None:
    """Rename into the store, translating the errors callers must tell apart."""
    try:
        posix.rename_noreplace(source, destination)
    except FileExistsError as exc:
        raise AlreadyStoredError(f"{name!r} is already stored") from exc
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise StoreError("staging and store are on different filesystems") from exc
        raise


def _drop_staging_dir(directory: Path) -> None:
    """Remove the emptied upload directory; anything else left in it is kept for inspection."""
    try:
        os.rmdir(directory)
    except OSError as exc:
        logger.warning("staging directory %s kept: %s", directory, exc)
