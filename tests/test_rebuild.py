"""A catalogue rebuilt from the sidecars equals the one lost; ``scan`` finds dark and missing
books and deletes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from librarian_dagster.catalogue.database import dispose_catalogues, get_catalogue
from librarian_dagster.catalogue.models import Base, CorruptFile, File, Instance
from librarian_dagster.cli.main import app as cli
from librarian_dagster.definitions import build_definitions
from librarian_dagster.jobs.names import SCAN_JOB, SCAN_OP
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage import posix
from librarian_dagster.storage.sidecars import read_sidecar, sidecar_path
from tests.ingest_helpers import Site, dagster_resources, make_book, open_site

FIELDS = ("name", "size", "checksum", "is_directory", "uploader", "source", "created_at")


@pytest.fixture
def site(make_settings: Callable[..., LibrarianSettings], database_url: str) -> Site:
    return open_site(make_settings(database_url=database_url))


def shelve(site: Site, tmp_path: Path, count: int) -> list[str]:
    names = []
    for index in range(count):
        name = f"2026/12/07/book{index:02d}" + ("" if index % 2 else ".uvh5")
        if index % 2:
            source = make_book(tmp_path / "src", f"d{index}")
        else:
            source = tmp_path / "src" / f"f{index}"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(os.urandom(500 + index))
        assert site.ingest(site.upload(name, source)).status == "stored"
        names.append(name)
    return names


def rows(site: Site) -> dict[str, tuple[object, ...]]:
    with get_catalogue(site.settings.catalogue_url).session() as session:
        return {
            file.name: tuple(getattr(file, field) for field in FIELDS)
            for file in session.scalars(select(File))
        }


def lose_catalogue(site: Site) -> None:
    url = site.settings.catalogue_url
    engine = get_catalogue(url).engine
    if url.startswith("sqlite"):
        dispose_catalogues()
        Path(url.removeprefix("sqlite:///")).unlink()
    else:
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        dispose_catalogues()


def test_every_committed_book_has_its_sidecar(site: Site, tmp_path: Path) -> None:
    for name in shelve(site, tmp_path, 2):
        sidecar = read_sidecar(sidecar_path(site.store, name))
        with site.catalogue.session() as session:
            file = session.scalars(select(File).where(File.name == name)).one()
            assert tuple(getattr(sidecar, f) for f in FIELDS[:-1]) == tuple(
                getattr(file, f) for f in FIELDS[:-1]
            )
            assert sidecar.created == file.created_at


def test_rebuild_after_the_catalogue_is_lost_gives_back_the_same_rows(
    site: Site, tmp_path: Path
) -> None:
    names = shelve(site, tmp_path, 5)
    before = rows(site)
    lose_catalogue(site)
    prepare(site.settings)  # what `librarian init` does
    assert rows(site) == {}

    config = ["--config", str(site.settings.config_file)]
    rebuilt = CliRunner().invoke(cli, [*config, "rebuild", "--store", "main"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "5 books recorded" in rebuilt.output
    assert rows(site) == before
    with get_catalogue(site.settings.catalogue_url).session() as session:
        instances = session.scalars(select(Instance).join(File)).all()
        assert sorted(row.file.name for row in instances) == sorted(names)
        assert all(row.available and row.verified_at for row in instances)
    # Again: nothing new, nothing doubled.
    again = CliRunner().invoke(cli, [*config, "rebuild", "--store", "main", "--no-verify"])
    assert again.exit_code == 0 and "5 already catalogued" in again.output


def test_rebuild_records_a_damaged_book_as_corrupt(site: Site, tmp_path: Path) -> None:
    names = shelve(site, tmp_path, 2)
    victim = site.store.path_for(names[0])
    lose_catalogue(site)
    prepare(site.settings)
    victim.chmod(0o644)
    victim.write_bytes(b"rot")
    config = ["--config", str(site.settings.config_file)]
    rebuilt = CliRunner().invoke(cli, [*config, "rebuild", "--store", "main"])
    assert rebuilt.exit_code == 1 and "1 recorded as corrupt" in rebuilt.output
    with get_catalogue(site.settings.catalogue_url).session() as session:
        (record,) = session.scalars(select(CorruptFile)).all()
        assert (
            record.file.name == names[0] and not session.get(Instance, record.instance_id).available
        )
    assert victim.exists()


def test_scan_finds_dark_and_missing_books_and_deletes_nothing(site: Site, tmp_path: Path) -> None:
    names = shelve(site, tmp_path, 3)
    dark = site.store.store_dir / "2026" / "12" / "07" / "stray.dat"
    dark.write_bytes(b"nobody catalogued me")
    gone = site.store.path_for(names[1])  # a directory book
    posix.remove_tree(gone)
    config = ["--config", str(site.settings.config_file)]
    scanned = CliRunner().invoke(cli, [*config, "scan", "--store", "main", "--json"])
    assert scanned.exit_code == 1, scanned.output
    report = json.loads(scanned.output)
    assert report["dark"] == ["2026/12/07/stray.dat"]
    assert report["missing"] == [names[1]]
    assert any("a sidecar without its book" in line for line in report["disagreements"])
    assert dark.exists() and site.store.path_for(names[0]).exists()

    job = dg.Definitions(
        jobs=build_definitions().jobs, resources=dagster_resources(site)
    ).resolve_job_def(SCAN_JOB)
    result = job.execute_in_process(
        run_config={"ops": {SCAN_OP: {"config": {"store": "main"}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success and dark.exists()


def test_a_clean_store_scans_clean(site: Site, tmp_path: Path) -> None:
    shelve(site, tmp_path, 2)
    config = ["--config", str(site.settings.config_file)]
    scanned = CliRunner().invoke(cli, [*config, "scan", "--store", "main"])
    assert scanned.exit_code == 0, scanned.output
    assert "0 dark, 0 missing, 0 disagreements" in scanned.output
    unknown = CliRunner().invoke(cli, [*config, "scan", "--store", "nope"])
    assert unknown.exit_code != 0 and "no store 'nope'" in unknown.output


def test_a_book_named_like_a_temporary_is_a_book_and_a_sidecar_being_written_is_not(
    site: Site, tmp_path: Path
) -> None:
    from librarian_dagster.services.integrity_rebuild import scan_store

    source = tmp_path / "notes"
    source.write_bytes(b"a book whose name starts with .tmp-")
    assert site.ingest(site.upload(".tmp-notes", source)).status == "stored"
    shelve(site, tmp_path, 1)
    half = site.store.store_dir / "2026" / "12" / "07" / ".tmp-4242-0a1b2c3d-x,librarian.json"
    half.write_text("{")  # a crash while writing a sidecar
    report = scan_store(site.catalogue, site.store)
    assert (report.dark, report.missing, report.disagreements) == ([], [], [])
