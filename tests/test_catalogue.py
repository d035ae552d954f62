"""The catalogue on SQLite and PostgreSQL: schema from migrations, constraints, sessions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.migrate import current_revision, upgrade
from librarian_dagster.catalogue.models import (
    Base,
    CallbackOutbox,
    File,
    IncomingTransfer,
    Instance,
    Librarian,
    RemoteInstance,
    Store,
)
from librarian_dagster.states import StoreKind, TransferKind, TransferStatus


def _file(name: str = "2026/11/25/book_0001", size: int = 10) -> File:
    return File(name=name, size=size, checksum="xxh3_128:" + "0" * 32, uploader="u", source="s")


def _store(catalogue: Catalogue) -> Store:
    with catalogue.session() as session:
        store = Store(name="main", kind=StoreKind.LOCAL, root="/data/main")
        session.add(store)
    return store


def test_migrations_produce_the_models_schema(catalogue: Catalogue) -> None:
    with catalogue.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert current_revision(catalogue.engine) is not None


def test_migrating_twice_is_a_no_op(catalogue: Catalogue) -> None:
    before = current_revision(catalogue.engine)
    upgrade(catalogue.engine)
    assert current_revision(catalogue.engine) == before
    tables = set(inspect(catalogue.engine).get_table_names())
    assert {
        "users",
        "librarians",
        "stores",
        "files",
        "instances",
        "remote_instances",
        "incoming_transfers",
        "outgoing_transfers",
        "transfer_batches",
        "corrupt_files",
        "events",
        "callback_outbox",
    } <= tables


def test_indexes_for_sensor_queries_exist(catalogue: Catalogue) -> None:
    inspector = inspect(catalogue.engine)

    def indexed(table: str) -> set[tuple[str, ...]]:
        return {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)} | {
            tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)
        }

    assert ("status", "id") in indexed("incoming_transfers")
    assert ("store_id", "file_id") in indexed("instances")
    assert ("librarian_id", "file_id") in indexed("remote_instances")
    assert ("librarian_id", "status") in indexed("outgoing_transfers")
    assert ("status", "id") in indexed("transfer_batches")
    assert ("delivered_at", "next_attempt_at") in indexed("callback_outbox")
    assert ("name",) in indexed("files")
    assert ("created_at",) in indexed("files")


def test_file_names_are_unique(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        session.add(_file())
    with pytest.raises(IntegrityError), catalogue.session() as session:
        session.add(_file())
    with catalogue.session() as session:
        assert session.scalar(select(File).where(File.name == _file().name)) is not None


def test_instance_unique_per_file_and_store(catalogue: Catalogue) -> None:
    store = _store(catalogue)
    with catalogue.session() as session:
        file = _file()
        session.add(file)
        session.flush()
        session.add(Instance(file_id=file.id, store_id=store.id, path="/data/main/store/x"))
        file_id = file.id
    with pytest.raises(IntegrityError), catalogue.session() as session:
        session.add(Instance(file_id=file_id, store_id=store.id, path="/elsewhere"))


def test_remote_instance_unique_per_file_peer_store(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        file = _file()
        peer = Librarian(
            name="site-b", url="http://b", remote_user="site-a", encrypted_password=b"x"
        )
        session.add_all([file, peer])
        session.flush()
        session.add(RemoteInstance(file_id=file.id, librarian_id=peer.id, store_name="main"))
        session.add(RemoteInstance(file_id=file.id, librarian_id=peer.id, store_name="tape"))
        ids = (file.id, peer.id)
    with pytest.raises(IntegrityError), catalogue.session() as session:
        session.add(RemoteInstance(file_id=ids[0], librarian_id=ids[1], store_name="main"))


def test_foreign_keys_are_enforced(catalogue: Catalogue) -> None:
    with pytest.raises(IntegrityError), catalogue.session() as session:
        session.add(Instance(file_id=12345, store_id=67890, path="/nowhere"))


def test_session_rolls_back_on_error(catalogue: Catalogue) -> None:
    with pytest.raises(RuntimeError), catalogue.session() as session:
        session.add(_file("rolled/back"))
        session.flush()
        raise RuntimeError("boom")
    with catalogue.session() as session:
        assert session.scalar(select(File).where(File.name == "rolled/back")) is None


def test_timestamps_are_aware_utc_and_enums_validated(catalogue: Catalogue) -> None:
    store = _store(catalogue)
    moment = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    with catalogue.session() as session:
        session.add(
            IncomingTransfer(
                kind=TransferKind.UPLOAD,
                status=TransferStatus.STAGED,
                name="a",
                size=1,
                uploader="u",
                source="s",
                store_id=store.id,
                staging_id="abc",
                staging_path="/x",
                created_at=moment,
            )
        )
    with catalogue.session() as session:
        row = session.scalars(select(IncomingTransfer)).one()
        assert row.created_at == moment and row.created_at.tzinfo is not None
        assert row.status is TransferStatus.STAGED
        raw = session.execute(text("SELECT status FROM incoming_transfers")).scalar_one()
        assert raw == "staged"
    with pytest.raises(StatementError), catalogue.session() as session:
        session.add(
            File(
                name="n",
                size=1,
                checksum="c",
                uploader="u",
                source="s",
                created_at=datetime(2026, 1, 1),
            )
        )  # naive: refused


def test_json_payloads_round_trip(catalogue: Catalogue) -> None:
    with catalogue.session() as session:
        peer = Librarian(name="site-b", url="http://b", remote_user="a", encrypted_password=b"k")
        session.add(peer)
        session.flush()
        session.add(
            CallbackOutbox(
                librarian_id=peer.id,
                route="/clones/complete",
                payload={"ids": [1, 2, 3], "store": "main"},
            )
        )
    with catalogue.session() as session:
        row = session.scalars(select(CallbackOutbox)).one()
        assert row.payload == {"ids": [1, 2, 3], "store": "main"}
        assert row.delivered_at is None and row.attempts == 0


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with catalogue.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    catalogue.dispose()


def test_migration_0002_gives_copies_taken_out_of_service_earlier_a_record(
    catalogue: Catalogue,
) -> None:
    """Before 0002 a check that found a copy missing only marked it unavailable."""
    from alembic import command

    from librarian_dagster.catalogue.migrate import alembic_config
    from librarian_dagster.catalogue.models import CorruptFile
    from librarian_dagster.states import CorruptionReason, CorruptionStatus

    command.downgrade(alembic_config(catalogue.engine), "0001")
    with catalogue.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO stores (id, name, kind, root, enabled, ingestable, declared,"
                " created_at, updated_at) VALUES (1, 'main', 'local', '/d', true, true, true,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for file_id, available in ((1, True), (2, False)):
            connection.execute(
                text(
                    "INSERT INTO files (id, name, size, checksum, is_directory, uploader,"
                    " source, created_at) VALUES (:id, :name, 1, 'xxh3_128:00', false, 'u',"
                    " 's', CURRENT_TIMESTAMP)"
                ),
                {"id": file_id, "name": f"f{file_id}"},
            )
            connection.execute(
                text(
                    "INSERT INTO instances (id, file_id, store_id, path, available,"
                    " created_at) VALUES (:id, :id, 1, 'p', :available, CURRENT_TIMESTAMP)"
                ),
                {"id": file_id, "available": available},
            )
    upgrade(catalogue.engine)
    with catalogue.session() as session:
        (record,) = session.scalars(select(CorruptFile)).all()
        assert (record.instance_id, record.reason, record.status) == (
            2,
            CorruptionReason.MISSING,
            CorruptionStatus.DETECTED,
        )
        assert record.detected_at.tzinfo is not None


def test_migration_0004_starts_existing_sneaker_stores_filling(catalogue: Catalogue) -> None:
    """Stores of kind sneaker declared before 0004 get a drive state; local ones none."""
    from alembic import command

    from librarian_dagster.catalogue.migrate import alembic_config
    from librarian_dagster.states import DriveState

    command.downgrade(alembic_config(catalogue.engine), "0003")
    with catalogue.engine.begin() as connection:
        for store_id, name, kind in ((1, "main", "local"), (2, "drive1", "sneaker")):
            connection.execute(
                text(
                    "INSERT INTO stores (id, name, kind, root, enabled, ingestable, declared,"
                    " created_at, updated_at) VALUES (:id, :name, :kind, '/d', true, true, true,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": store_id, "name": name, "kind": kind},
            )
    upgrade(catalogue.engine)
    with catalogue.session() as session:
        states = {s.name: (s.state, s.drive_uuid) for s in session.scalars(select(Store))}
    assert states == {"main": (None, None), "drive1": (DriveState.FILLING, None)}
