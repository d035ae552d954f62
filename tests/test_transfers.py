"""Operators and transfers: list (filters, pages), retry a failed book, cancel one in flight;
through the API and ``librarian transfer``. Also: an empty directory sent by a peer is refused."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from librarian_dagster.catalogue.models import CallbackOutbox, IncomingTransfer, OutgoingTransfer
from librarian_dagster.cli.main import app as cli
from librarian_dagster.services.ingest import ingest_transfer
from librarian_dagster.states import TransferStatus
from tests.clone_helpers import befriend_both, clone_sites, pump, step_sender
from tests.test_clones import count, upload

ADMIN = ("admin", "admin-password")


def test_list_retry_and_cancel_through_the_api_and_the_cli(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"], max_attempts=1) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        names = upload(a, tmp_path, 3)
        bad = a.store.store_dir / names[0]
        good_bytes = bad.read_bytes()
        bad.chmod(0o644)
        bad.write_bytes(b"X" * len(good_bytes))  # a's copy is bad: the mover refuses it
        pump(sites)
        listed = a.client.get("/api/v2/transfers", auth=ADMIN).json()
        by_name = {t["name"]: t for t in listed["transfers"]}
        assert by_name[names[0]]["status"] == "failed" and by_name[names[0]]["peer"] == "site-b"
        assert "does not match" in by_name[names[0]]["failure_reason"]
        assert by_name[names[1]]["status"] == "stored" and by_name[names[1]]["mover"] == "local"
        failed = a.client.get(
            "/api/v2/transfers", params={"status": "failed", "peer": "site-b"}, auth=ADMIN
        ).json()["transfers"]
        assert [t["name"] for t in failed] == [names[0]]
        page = a.client.get("/api/v2/transfers", params={"limit": 2}, auth=ADMIN).json()
        rest = a.client.get(
            "/api/v2/transfers", params={"limit": 2, "cursor": page["next_cursor"]}, auth=ADMIN
        ).json()
        assert len(page["transfers"]) == 2 and len(rest["transfers"]) == 1
        assert rest["next_cursor"] is None
        incoming = a.client.get(
            "/api/v2/transfers", params={"direction": "incoming"}, auth=ADMIN
        ).json()["transfers"]
        assert incoming == [] or {t["direction"] for t in incoming} == {"incoming"}
        assert (
            a.client.get("/api/v2/transfers", params={"peer": "nobody"}, auth=ADMIN).status_code
            == 404
        )
        stored_id = by_name[names[1]]["id"]
        assert a.client.post(f"/api/v2/transfers/{stored_id}/retry", auth=ADMIN).status_code == 409
        # The CLI: list as JSON, retry the failed one once the copy is repaired.
        runner = CliRunner()
        config = ["--config", str(a.settings.config_file)]
        shown = runner.invoke(cli, [*config, "transfer", "list", "--status", "failed", "--json"])
        assert shown.exit_code == 0 and [t["name"] for t in json.loads(shown.stdout)] == [names[0]]
        bad.write_bytes(good_bytes)
        failed_id = by_name[names[0]]["id"]
        retried = runner.invoke(cli, [*config, "transfer", "retry", str(failed_id)])
        assert retried.exit_code == 0 and "next batch" in retried.stdout
        again = runner.invoke(cli, [*config, "transfer", "retry", str(failed_id)])
        assert again.exit_code == 1 and "on its way again already" in again.stderr
        pump(sites)
        assert count(b, IncomingTransfer, IncomingTransfer.status == TransferStatus.STORED) == 3
        with a.catalogue.session() as session:
            old = session.get(OutgoingTransfer, failed_id)
            assert old is not None and old.status == TransferStatus.FAILED  # its history
            (new,) = session.scalars(
                select(OutgoingTransfer).where(
                    OutgoingTransfer.file_id == old.file_id, OutgoingTransfer.id != old.id
                )
            )
            assert new.status == TransferStatus.STORED and new.created_at == old.created_at
            assert f"retry of transfer {failed_id}" in (new.failure_reason or "")


def test_cancelling_a_book_in_flight_tells_the_peer_to_drop_it(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        a, b = sites["site-a"], sites["site-b"]
        befriend_both(a, b)
        upload(a, tmp_path, 2)
        step_sender(a, sites)  # staged at b and submitted
        with a.catalogue.session() as session:
            first = session.scalars(select(OutgoingTransfer).order_by(OutgoingTransfer.id)).first()
            assert first is not None
            transfer_id, remote_id = first.id, first.remote_transfer_id
        cancelled = a.client.post(f"/api/v2/transfers/{transfer_id}/cancel", auth=ADMIN)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (
            a.client.post(f"/api/v2/transfers/{transfer_id}/cancel", auth=ADMIN).status_code == 409
        )
        with a.catalogue.session() as session:
            owed = session.scalars(select(CallbackOutbox)).one()
            assert owed.payload["role"] == "source"
            assert owed.payload["transfers"][0]["transfer_id"] == remote_id
        pump(sites)
        with b.catalogue.session() as session:
            dropped = session.get(IncomingTransfer, remote_id)
            assert dropped is not None and dropped.status == TransferStatus.FAILED
            assert "cancelled by admin" in (dropped.failure_reason or "")
        with a.catalogue.session() as session:
            statuses = sorted(r.status.value for r in session.scalars(select(OutgoingTransfer)))
        assert statuses == ["cancelled", "stored"]


def test_an_empty_directory_from_a_peer_is_refused(tmp_path: Path) -> None:
    with clone_sites(tmp_path, ["site-a", "site-b"]) as sites:
        b = sites["site-b"]
        befriend_both(sites["site-a"], b)
        item = {
            "transfer_id": 1,
            "name": "2026/empty",
            "size": 0,
            "checksum": "xxh3_128:" + "0" * 32,
            "is_directory": True,
            "uploader": "alice",
            "source": "site-a",
            "source_store": "main",
        }
        staged = b.client.post(
            "/api/v2/clones/stage",
            json={"mover": "local", "items": [item]},
            auth=("site-a", "peer-password-1"),
        ).json()["items"][0]
        Path(staged["staging_path"]).mkdir()
        assert (
            b.client.post(
                "/api/v2/clones/staged",
                json={"transfer_ids": [staged["remote_transfer_id"]]},
                auth=("site-a", "peer-password-1"),
            ).status_code
            == 200
        )
        outcome = ingest_transfer(
            b.catalogue,
            b.stores,
            staged["remote_transfer_id"],
            run_id="r",
            run_is_active=lambda _: False,
            settings=b.settings,
        )
        assert outcome.status == "failed" and "empty directory" in (outcome.reason or "")
