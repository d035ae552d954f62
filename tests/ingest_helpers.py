"""Drive uploads through the services directly (no HTTP, no Dagster) for ingest tests."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from librarian_dagster.catalogue.database import Catalogue, get_catalogue
from librarian_dagster.resources import librarian_resources
from librarian_dagster.services import uploads
from librarian_dagster.services.accounts import Principal
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.services.ingest import IngestOutcome, ingest_transfer
from librarian_dagster.services.stores import open_stores
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from librarian_dagster.storage.checksums import hash_path
from librarian_dagster.storage.local_store import LocalStore

UPLOADER = Principal("alice", UserLevel.READ_APPEND)


def make_book(directory: Path, name: str = "book", files: int = 3) -> Path:
    """A small directory book with nested files."""
    book = directory / name
    (book / "sub").mkdir(parents=True)
    for i in range(files):
        (book / f"part{i}.dat").write_bytes(os.urandom(1000 + i))
    (book / "sub" / "meta.json").write_text('{"ok": true}')
    return book


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Site:
    settings: LibrarianSettings
    catalogue: Catalogue
    stores: dict[str, LocalStore]

    @property
    def store(self) -> LocalStore:
        return self.stores["main"]

    def stage(self, name: str, source: Path, checksum: str | None = None) -> int:
        with self.catalogue.session() as session:
            transfer, _ = uploads.stage_upload(
                session,
                self.stores,
                name=name,
                size=tree_size(source),
                checksum=checksum,
                principal=UPLOADER,
                source=self.settings.name,
                ingest=self.settings.ingest,
            )
            return transfer.id

    def staging_path(self, upload_id: int) -> Path:
        with self.catalogue.session() as session:
            return Path(uploads.get_upload(session, upload_id, UPLOADER).staging_path)

    def copy_in(self, upload_id: int, source: Path) -> None:
        target = self.staging_path(upload_id)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)

    def commit(self, upload_id: int, checksum: str | None) -> None:
        with self.catalogue.session() as session:
            uploads.commit_upload(session, self.stores, upload_id, checksum, UPLOADER)

    def upload(self, name: str, source: Path, checksum: str | None = None) -> int:
        upload_id = self.stage(name, source)
        self.copy_in(upload_id, source)
        self.commit(upload_id, checksum or str(hash_path(source)))
        return upload_id

    def ingest(
        self, upload_id: int, run_id: str = "run-1", alive: frozenset[str] = frozenset()
    ) -> IngestOutcome:
        return ingest_transfer(
            self.catalogue,
            self.stores,
            upload_id,
            run_id=run_id,
            run_is_active=lambda r: r in alive,
            settings=self.settings,
        )

    def status(self, upload_id: int) -> tuple[str, str | None]:
        with self.catalogue.session() as session:
            transfer = uploads.get_upload(session, upload_id, UPLOADER)
            return transfer.status.value, transfer.failure_reason

    def store_listing(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.store.store_dir)) for p in self.store.store_dir.rglob("*")
        )

    def staging_listing(self) -> list[str]:
        return sorted(p.name for p in self.store.staging_dir.iterdir())


def open_site(settings: LibrarianSettings) -> Site:
    prepare(settings)
    return Site(settings, get_catalogue(settings.catalogue_url), open_stores(settings))


def dagster_resources(site: Site) -> dict[str, object]:
    """The code location's resources, pointed at this site's config file."""
    return dict(librarian_resources(str(site.settings.config_file)))
