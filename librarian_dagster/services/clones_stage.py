"""Asking a peer to stage a batch, and taking its answer book by book.

The peer answers each book: ``staged`` (a staging path for the bytes), ``held`` (recorded
as a remote instance, nothing sent), ``in_progress`` (sent again later), ``conflict`` or
``refused`` (failed, with an event). Its answer is checked before it is trusted, because it
decides where our mover writes: a staging path must be ``…/staging/<id>/<name>``, and a
Globus peer's collection is the one it named first (never ours). A book the answer leaves
out, or answers wrongly, is sent again later: no book stays in limbo. The request is
idempotent at the peer (per outgoing transfer id), so a lost answer is asked for again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PurePosixPath

from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, TransferBatch
from librarian_dagster.services.clones_batch import (
    BatchOutcome,
    batch_row,
    copies_here,
    defer,
    rows_of,
    schedule_resend,
)
from librarian_dagster.services.copies import record_remote_instance
from librarian_dagster.services.events import record_event
from librarian_dagster.services.peers import PeerLinks, access_of, record_contact
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import (
    BatchStatus,
    MoverName,
    Severity,
    StageAnswer,
    TransferStatus,
)
from librarian_dagster.wire import CloneItem, CloneStageRequest, CloneStageResponse

_STAGING_ID = re.compile(r"[0-9a-f]{32}")


def _stage_request(session: Session, batch: TransferBatch) -> CloneStageRequest | None:
    items = []
    rows = rows_of(session, batch.id, TransferStatus.INITIATED)
    copies = copies_here(session, [row.file_id for row in rows])
    for row in rows:
        copy = copies.get(row.file_id)
        file: File = row.file
        items.append(
            CloneItem(
                transfer_id=row.id,
                name=file.name,
                size=file.size,
                checksum=file.checksum,
                is_directory=file.is_directory,
                uploader=file.uploader,
                source=file.source,
                source_store=copy[1] if copy else "unknown",
            )
        )
    if not items:
        return None
    return CloneStageRequest(mover=MoverName(batch.mover), items=items)


def staging_problem(path: str | None, name: str) -> str | None:
    """Why a peer's staging path for book ``name`` is not one we send to, if it is not.

    The peer chooses where our mover writes: only ``…/staging/<staging id>/<last segment of
    the name>`` (a librarian's staging directory, as either mover addresses it) is taken.
    """
    if not path:
        return "the peer staged it but gave no path"
    where = PurePosixPath(path)
    if not (
        where.is_absolute()
        and where.name == name.rsplit("/", 1)[-1]
        and _STAGING_ID.fullmatch(where.parent.name)
        and where.parent.parent.name == "staging"
        and ".." not in where.parts
    ):
        return f"the peer staged it at {path[:300]!r}, which is not a staging directory"
    return None


def _endpoint_problem(
    session: Session, settings: LibrarianSettings, batch: TransferBatch, endpoint: str | None
) -> str | None:
    """Why the peer's collection is not one we send to, if it is not; the first one a
    Globus peer names is remembered, and another one later is refused (a human looks)."""
    if batch.mover != MoverName.GLOBUS:
        return None
    peer = batch.librarian
    ours = settings.globus.collection_id if settings.globus is not None else None
    if not endpoint:
        return "the peer named no Globus collection"
    if endpoint == ours:
        return "the peer named our own Globus collection as its own"
    if peer.collection_id is None:
        peer.collection_id = endpoint
    elif peer.collection_id != endpoint:
        return (
            f"the peer named Globus collection {endpoint[:100]}, not {peer.collection_id} as "
            "before; if it moved, set it with `librarian peer set`"
        )
    return None


def _record_answers(
    session: Session,
    settings: LibrarianSettings,
    batch: TransferBatch,
    response: CloneStageResponse,
    outcome: BatchOutcome,
) -> None:
    """One transaction: every book of the batch gets its peer's answer (a book the answer
    leaves out, or answers wrongly, is sent again later; it never stays in limbo)."""
    rows = {row.id: row for row in rows_of(session, batch.id, TransferStatus.INITIATED)}
    answers = {answer.transfer_id: answer for answer in response.items}
    now = datetime.now(UTC)
    peer = batch.librarian.name
    endpoint_problem = _endpoint_problem(session, settings, batch, response.endpoint)
    if endpoint_problem is not None:
        record_event(
            session,
            Severity.ERROR,
            "clone_bad_answer",
            f"{peer}: {endpoint_problem}",
            subject=f"batch {batch.id}",
            details={"batch_id": batch.id, "peer": peer},
        )
    for row in rows.values():
        name = row.file.name
        answer = answers.get(row.id)
        if answer is None:
            schedule_resend(session, settings, row, f"{peer} left it out of its answer")
            outcome.resent.append(name)
        elif answer.answer == StageAnswer.STAGED:
            problem = endpoint_problem or staging_problem(answer.staging_path, name)
            if problem is None and answer.remote_transfer_id is not None:
                row.remote_transfer_id = answer.remote_transfer_id
                row.remote_staging_path = answer.staging_path
            else:
                schedule_resend(session, settings, row, f"{peer}: {problem or 'no id'}")
                outcome.resent.append(name)
        elif answer.answer == StageAnswer.HELD:
            row.status = TransferStatus.STORED
            row.completed_at = now
            record_remote_instance(
                session, row.file_id, row.librarian_id, answer.store or "?", verified=True
            )
            outcome.arrived.append(name)
        elif answer.answer == StageAnswer.IN_PROGRESS:
            schedule_resend(session, settings, row, f"{peer}: {answer.reason or 'in progress'}")
            outcome.resent.append(name)
        else:  # conflict, refused: never retried by itself
            row.status = TransferStatus.FAILED
            row.completed_at = now
            row.failure_reason = f"{peer} {answer.answer.value}: {answer.reason}"
            record_event(
                session,
                Severity.ERROR,
                f"clone_{answer.answer.value}",
                row.failure_reason,
                subject=name,
                details={"transfer_id": row.id, "peer": peer},
            )
            outcome.failed.append(name)
    batch.endpoint = response.endpoint
    staged = [row for row in rows.values() if row.remote_staging_path and row.batch_id]
    batch.status = BatchStatus.STAGED if staged else BatchStatus.SUCCEEDED
    batch.file_count = len(staged)
    batch.total_bytes = sum(row.file.size for row in staged)
    if not staged:
        batch.completed_at = now


def stage(
    catalogue: Catalogue,
    settings: LibrarianSettings,
    links: PeerLinks,
    batch_id: int,
    outcome: BatchOutcome,
) -> None:
    with catalogue.session() as session:
        batch = batch_row(session, batch_id)
        assert batch is not None
        access = access_of(settings, batch.librarian)
        request = _stage_request(session, batch)
    if request is None:
        with catalogue.session() as session:
            batch = batch_row(session, batch_id, lock=True)
            assert batch is not None
            batch.status = BatchStatus.SUCCEEDED
            batch.completed_at = datetime.now(UTC)
        outcome.step, outcome.detail = "over", "no book left to send"
        return
    link = links(access)
    try:
        response = link.stage(request)
    except Exception as error:
        with catalogue.session() as session:
            record_contact(session, batch.librarian_id, str(error))
        outcome.detail = f"{outcome.peer} did not stage the batch: {error}"
        raise defer(catalogue, settings, batch_id, outcome) from error
    finally:
        link.close()
    with catalogue.session() as session:
        batch = batch_row(session, batch_id, lock=True)
        assert batch is not None
        if batch.status == BatchStatus.INITIATED:
            _record_answers(session, settings, batch, response, outcome)
        record_contact(session, batch.librarian_id, None)
    outcome.step = "staged"
    outcome.detail = (
        f"{outcome.peer} staged the batch ({len(outcome.arrived)} held already, "
        f"{len(outcome.failed)} refused, {len(outcome.resent)} busy)"
    )
