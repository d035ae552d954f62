"""A librarian with a main store and a sneaker drive (a directory), for SneakerNet tests.

Books are uploaded and ingested through the services (``tests.ingest_helpers``), so they
are real stored books with real checksums; the drive is provisioned by ``prepare`` as
``librarian init`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from librarian_dagster.catalogue.models import File, Instance, Store
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.checksums import hash_path
from tests.ingest_helpers import Site, open_site


def sneaker_toml(
    drive: Path, name: str = "drive1", capacity: int | None = None, **keys: str
) -> str:
    lines = [
        "[[stores]]",
        f'name = "{name}"',
        'kind = "sneaker"',
        f'root = "{drive}"',
        "require_mount = false",
        "reserve_bytes = 0",
    ]
    if capacity is not None:
        lines.append(f"capacity_bytes = {capacity}")
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@dataclass
class DriveSite:
    site: Site
    drive: Path
    books_dir: Path

    @property
    def settings(self) -> LibrarianSettings:
        return self.site.settings

    def add_book(self, name: str, size: int) -> int:
        """Upload and ingest a one-file book of ``size`` random bytes; its file id."""
        source = self.books_dir / name.replace("/", "_")
        source.write_bytes(os.urandom(size))
        upload_id = self.site.upload(name, source)
        outcome = self.site.ingest(upload_id)
        assert outcome.status == "stored", outcome
        with self.site.catalogue.session() as session:
            return session.scalar(select(File.id).where(File.name == name))

    def on_drive(self, store: str = "drive1") -> list[str]:
        """Names recorded on ``store``, in catalogue order."""
        with self.site.catalogue.session() as session:
            return list(
                session.scalars(
                    select(File.name)
                    .join(Instance, Instance.file_id == File.id)
                    .join(Store, Store.id == Instance.store_id)
                    .where(Store.name == store)
                    .order_by(File.id)
                )
            )

    def drive_listing(self) -> list[str]:
        """Every entry below the drive's root but its identity, as paths relative to it."""
        return sorted(
            str(p.relative_to(self.drive))
            for p in self.drive.rglob("*")
            if p.name != ".librarian-drive.json"
        )

    def store_row(self, name: str = "drive1") -> Store:
        with self.site.catalogue.session() as session:
            row = session.scalar(select(Store).where(Store.name == name))
            assert row is not None
            session.expunge(row)
            return row

    def checksum_on_drive(self, name: str) -> str:
        return str(hash_path(self.drive / "store" / name))


def drive_site(
    make_settings: Callable[..., LibrarianSettings],
    database_url: str,
    tmp_path: Path,
    extra_toml: str = "",
    capacity: int | None = None,
    **keys: str,
) -> DriveSite:
    drive = tmp_path / "drive1"
    drive.mkdir()
    books = tmp_path / "sources"
    books.mkdir()
    # Books are carried the moment they are catalogued (the lag has a test of its own).
    lag = "" if "catalogue_lag_seconds" in extra_toml else "[transfer]\ncatalogue_lag_seconds = 0\n"
    toml = sneaker_toml(drive, capacity=capacity, **keys) + extra_toml + lag
    settings = make_settings(database_url=database_url, extra_toml=toml)
    return DriveSite(open_site(settings), drive, books)
