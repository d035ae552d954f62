"""Validate one book now: re-read every copy here, and ask every peer holding one to re-read
its own.

``validate_here`` is what ``POST /files/{name}/validate`` answers: each of our copies in
service (or known bad) is read now and the result recorded exactly as an integrity pass
records it (a good copy's ``verified_at``, a bad one's corrupt-copy record). A copy that is
out of service for another reason (deleted by a rolling store, on a drive that travels) is
listed, not read: reading it would only "find" it missing. One book is read at a time in a
process (``READER``): a validation is a large sequential read, like the integrity pass; a
request that finds another being read for ``READER_WAIT_SECONDS`` is answered 429 (the
peer asks again later) instead of holding one of the API's worker threads for an hour.
Answers name what is wrong, never a path on this host.

``validate_everywhere`` is what ``librarian validate NAME`` (and a rolling store's cleanup)
uses: our copies, then each peer with a remote instance, asked through a ``PeerLink``. A
peer that cannot be asked is reported as unreachable with the reason, never skipped; a
peer whose catalogue holds another checksum for the name does not match, whatever its
bytes say. A peer's copy that matches refreshes our remote instance's ``verified_at``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, Librarian, RemoteInstance
from librarian_dagster.services import corrupt, files
from librarian_dagster.services.errors import PeerCallFailed, ServiceError, TooManyRequests
from librarian_dagster.services.integrity import VerifyReport, read_copy, record_read
from librarian_dagster.services.integrity_slice import Candidate, readability
from librarian_dagster.services.peers import PeerLinks, access_of
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.storage.checksums import Checksum
from librarian_dagster.storage.local_store import LocalStore
from librarian_dagster.wire.integrity import CopyValidation, FileValidation

READER = threading.Lock()
READER_WAIT_SECONDS = 5.0


def validate_here(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    settings: LibrarianSettings,
    name: str,
) -> FileValidation:
    """Re-read our copies of ``name`` now (NotFound if it is not catalogued here)."""
    with catalogue.session() as session:
        file = files.get_file(session, name)
        bad = corrupt.open_problems(session, file.id)
        copies = [
            (instance.id, instance.store.name, instance.available or instance.id in bad)
            for instance in file.instances
        ]
        seen = readability(session, stores, settings)
        name, checksum, size = file.name, file.checksum, file.size
    expected = Checksum.parse(checksum)
    rolling = {store.name for store in settings.stores if store.rolling is not None}
    answers = []
    if not READER.acquire(timeout=READER_WAIT_SECONDS):
        # Another book is being read: a caller does not hold a worker thread for an hour.
        raise TooManyRequests("another validation is reading; try again later", 60.0)
    try:
        for instance_id, store, in_service in copies:
            now = datetime.now(UTC)
            if not in_service:
                answers.append(
                    CopyValidation(
                        store=store,
                        matches=False,
                        when=now,
                        problem=("not in service (deleted here, or its drive travels)"),
                    )
                )
                continue
            if store not in seen.readable:
                # Not the store's paths: the caller may be a peer (operators see events).
                why = (
                    "its store cannot be read now"
                    if store in seen.problems
                    else ("its drive is away on a trip")
                )
                answers.append(CopyValidation(store=store, matches=False, when=now, problem=why))
                continue
            found, reason, detail = read_copy(stores[store].path_for(name), expected)
            candidate = Candidate(instance_id, name, checksum, store, size, None)
            record_read(catalogue, candidate, found, reason, detail, VerifyReport())
            answers.append(
                CopyValidation(
                    store=store,
                    checksum=str(found) if found is not None else None,
                    matches=reason is None,
                    when=datetime.now(UTC),
                    problem=None if reason is None else reason.label,
                    rolling=store in rolling,
                )
            )
    finally:
        READER.release()
    return FileValidation(librarian=settings.name, name=name, checksum=checksum, copies=answers)


@dataclass(frozen=True)
class PeerValidation:
    """A peer's answer about its copies of a book, or why there is none."""

    peer: str
    answer: FileValidation | None
    problem: str | None = None

    @property
    def verified_copies(self) -> int:
        return 0 if self.answer is None else sum(copy.matches for copy in self.answer.copies)

    @property
    def durable_copies(self) -> int:
        """Verified copies not on a rolling store (see ``CopyValidation.rolling``)."""
        if self.answer is None:
            return 0
        return sum(copy.matches and not copy.rolling for copy in self.answer.copies)


def ask_peer(
    settings: LibrarianSettings, links: PeerLinks, peer: Librarian, name: str, checksum: str
) -> PeerValidation:
    try:
        access = access_of(settings, peer)
        link = links(access)
        try:
            answer = link.validate(name)
        finally:
            link.close()
    except PeerCallFailed as error:
        return PeerValidation(peer.name, None, f"unreachable: {error}")
    except ServiceError as error:  # e.g. its password cannot be decrypted here
        return PeerValidation(peer.name, None, f"not asked: {error}")
    if answer.librarian != peer.name:
        return PeerValidation(peer.name, None, f"answered as {answer.librarian!r}")
    if answer.checksum != checksum:
        wrong = [
            copy.model_copy(
                update={
                    "matches": False,
                    "problem": (f"its catalogue holds {answer.checksum}, ours {checksum}"),
                }
            )
            for copy in answer.copies
        ]
        return PeerValidation(peer.name, answer.model_copy(update={"copies": wrong}))
    return PeerValidation(peer.name, answer)


def holders(session: Session, name: str) -> list[Librarian]:
    """The peers we know hold a copy of ``name`` (a remote instance), by name."""
    return list(
        session.scalars(
            select(Librarian)
            .where(
                Librarian.id.in_(
                    select(RemoteInstance.librarian_id)
                    .join(File, RemoteInstance.file_id == File.id)
                    .where(File.name == name)
                )
            )
            .order_by(Librarian.name)
        ).all()
    )


def validate_everywhere(
    catalogue: Catalogue,
    stores: dict[str, LocalStore],
    settings: LibrarianSettings,
    links: PeerLinks,
    name: str,
) -> tuple[FileValidation, list[PeerValidation]]:
    """Our copies, then every peer holding one (see the module)."""
    here = validate_here(catalogue, stores, settings, name)
    with catalogue.session() as session:
        peers = holders(session, here.name)
        session.expunge_all()
    answers = [ask_peer(settings, links, peer, here.name, here.checksum) for peer in peers]
    _note_verified(catalogue, here.name, answers)
    return here, answers


def _note_verified(catalogue: Catalogue, name: str, answers: list[PeerValidation]) -> None:
    """Remote instances whose peer just verified a copy get that time."""
    with catalogue.session() as session:
        for answer in answers:
            if answer.answer is None:
                continue
            good = {copy.store: copy.when for copy in answer.answer.copies if copy.matches}
            remotes = session.scalars(
                select(RemoteInstance)
                .join(Librarian, RemoteInstance.librarian_id == Librarian.id)
                .join(File, RemoteInstance.file_id == File.id)
                .where(Librarian.name == answer.peer, File.name == name)
            ).all()
            for remote in remotes:
                if remote.store_name in good:
                    remote.verified_at = good[remote.store_name]
