"""SneakerNet at the source: a drive's manifest, written when it is shipped.

``write_manifest`` lists every book recorded on a sneaker store's drive (name, size,
checksum, path on the drive, created, uploader, source, which of our local stores keeps it
too) under the drive's UUID and this librarian's name, writes it onto the drive
(``librarian-manifest.json``) and, when asked, to a file of the operator's, then marks the
store ``in_transit``: no fill writes to it any more. A drive still filling is refused
unless ``force`` (a drive may be shipped half full). Writing again is allowed while it is
full or in transit: the same books give the same list. The drive's writer lock is held
meanwhile, so no fill adds a book the manifest would not list; the files are replaced
atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, Instance, Store
from librarian_dagster.services.sneaker_plan import DriveRefused, drive_in_place, sneaker_config
from librarian_dagster.services.stores import open_store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import DriveState, StoreKind
from librarian_dagster.storage import posix
from librarian_dagster.storage.sneaker import drive_lock
from librarian_dagster.wire.sneaker import (
    DRIVE_STORE_DIR,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    ManifestBook,
    SneakerManifest,
)


@dataclass(frozen=True)
class ManifestWritten:
    manifest: SneakerManifest
    on_drive: Path
    out: Path | None
    bytes: int


def write_manifest(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    store_name: str,
    out: Path | None,
    *,
    force: bool = False,
) -> ManifestWritten:
    config = sneaker_config(settings, store_name)
    store = open_store(config)
    if out is not None and not out.parent.is_dir():
        raise DriveRefused(f"cannot write {out}: {out.parent} is not a directory")
    with catalogue.session() as session:
        row, _ = drive_in_place(session, settings, config)
        _may_ship(row.state, store_name, force)
    with drive_lock(store.staging_dir, store_name), catalogue.session() as session:
        row, identity = drive_in_place(session, settings, config)  # again, now that it is ours
        _may_ship(row.state, store_name, force)
        rows = session.execute(
            select(
                File.id,
                File.name,
                File.size,
                File.checksum,
                File.is_directory,
                File.created_at,
                File.uploader,
                File.source,
            )
            .join(Instance, Instance.file_id == File.id)
            .where(Instance.store_id == row.id)
            .order_by(File.id)
        ).all()
        kept = _kept_here(session, [r.id for r in rows])
        books = [
            ManifestBook(
                name=r.name,
                size=r.size,
                checksum=r.checksum,
                path=f"{DRIVE_STORE_DIR}/{r.name}",
                is_directory=r.is_directory,
                created=r.created_at,
                uploader=r.uploader,
                source=r.source,
                origin_store=kept.get(r.id),
            )
            for r in rows
        ]
        manifest = SneakerManifest(
            format=MANIFEST_FORMAT,
            version=MANIFEST_VERSION,
            librarian=settings.name,
            store=store_name,
            drive_uuid=identity.drive_uuid,
            trip=row.drive_trip,
            created=datetime.now(UTC),
            books=books,
        )
        text = (json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n").encode()
        on_drive = config.root / MANIFEST_FILE
        try:
            posix.write_new_file(on_drive, text, replace=True)
            if out is not None:
                posix.write_new_file(out, text, replace=True)
        except OSError as error:
            raise DriveRefused(f"cannot write the manifest: {error}") from None
        session.execute(update(Store).where(Store.id == row.id).values(state=DriveState.IN_TRANSIT))
    return ManifestWritten(manifest, on_drive, out, sum(book.size for book in books))


def _kept_here(session: Session, file_ids: list[int]) -> dict[int, str]:
    """Per book, a local store of ours that keeps a copy in service (the destination records
    it as where we hold the book once the drive's copy is wiped)."""
    kept: dict[int, str] = {}
    for start in range(0, len(file_ids), 1000):
        for file_id, store in session.execute(
            select(Instance.file_id, Store.name)
            .join(Store, Store.id == Instance.store_id)
            .where(
                Instance.file_id.in_(file_ids[start : start + 1000]),
                Instance.available.is_(True),
                Store.kind == StoreKind.LOCAL,
            )
            .order_by(Instance.id)
        ):
            kept.setdefault(file_id, store)
    return kept


def _may_ship(state: DriveState | None, store: str, force: bool) -> None:
    if state == DriveState.FILLING and not force:
        raise DriveRefused(
            f"store {store!r} is still filling; --force writes its manifest anyway "
            "(and no more books go onto it)"
        )
    if state == DriveState.RETURNED:
        raise DriveRefused(
            f"store {store!r}: its books were delivered; wipe it (librarian sneaker wipe)"
        )
