"""Hostile load on a real server: stalled upload bodies, password guessing, rival writers.

A live uvicorn (``client_helpers.running_librarian``) because the in-process test client reads
a request body whole before the app sees it: a stall or two bodies at once need sockets.
Stalled bodies are raw sockets that send the headers and part of the body, then nothing.
Each test names the defect (of the hardening review) it guards.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from librarian_dagster.api import auth as auth_module
from librarian_dagster.api.login_throttle import ADDRESS_FACTOR
from librarian_dagster.services import accounts
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import UserLevel
from tests.api_helpers import PASSWORD, credentials
from tests.client_helpers import RunningLibrarian, running_librarian

ADMIN = credentials(UserLevel.ADMIN)
WRITER = credentials(UserLevel.READ_APPEND)
READER = credentials(UserLevel.READ_ONLY)


@pytest.fixture
def serve(
    make_settings: Callable[..., LibrarianSettings], database_url: str
) -> Callable[..., AbstractContextManager[RunningLibrarian]]:
    """``serve(**api_keys)``: a live librarian with these ``[api]`` settings."""

    @contextmanager
    def start(**api: object) -> Iterator[RunningLibrarian]:
        extra = "\n".join(["[api]", *(f"{key} = {value}" for key, value in api.items())])
        with running_librarian(make_settings(database_url=database_url, extra_toml=extra)) as lib:
            yield lib

    return start


def http(lib: RunningLibrarian, address: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=lib.url, transport=transport, timeout=10)


def stage(lib: RunningLibrarian, name: str, size: int, auth=WRITER) -> dict:
    with http(lib) as client:
        response = client.post("/api/v2/uploads", json={"name": name, "size": size}, auth=auth)
    assert response.status_code == 201, response.text
    return response.json()


def put(lib: RunningLibrarian, upload_id: int, body: bytes, auth=WRITER) -> httpx.Response:
    with http(lib) as client:
        return client.put(
            f"/api/v2/uploads/{upload_id}/content",
            content=body,
            headers={"content-type": "application/octet-stream"},
            auth=auth,
        )


class StalledPut:
    """A PUT of ``size`` bytes that sends only ``first`` and then waits."""

    def __init__(
        self, lib: RunningLibrarian, upload_id: int, size: int, first: bytes, auth=WRITER
    ) -> None:
        port = int(lib.url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        token = base64.b64encode(":".join(auth).encode()).decode()
        head = (
            f"PUT /api/v2/uploads/{upload_id}/content HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + first)

    def response(self, timeout: float) -> tuple[int, dict[str, str]]:
        """Status and headers of the answer (socket.timeout if none within ``timeout``)."""
        self.sock.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data, "the server closed the connection without an answer"
        status_line, *lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        return int(status_line.split()[1]), headers

    def close(self) -> None:
        self.sock.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def receiving(*infos: dict) -> Callable[[], bool]:
    """True once every upload's body is being written (its staging data exists)."""
    return lambda: all(Path(info["staging_path"]).exists() for info in infos)


# 7. Upload bodies: idle timeout, per-user cap, no thread starvation


def test_a_stalled_body_is_cut_off_with_408_and_leaves_nothing(serve) -> None:
    """Defect 7a: a body that stops arriving held its thread and staging data forever."""
    with serve(body_idle_timeout_seconds=0.5) as lib:
        info = stage(lib, "stall/book", 100)
        stalled = StalledPut(lib, info["upload_id"], 100, b"x" * 10)
        started = time.monotonic()
        try:
            status, _ = stalled.response(timeout=10)
        finally:
            stalled.close()
        assert status == 408 and time.monotonic() - started < 5
        assert not Path(info["staging_path"]).exists()
        assert put(lib, info["upload_id"], b"y" * 100).status_code == 200  # may send again


def test_one_user_may_stream_only_so_many_bodies_at_once(serve) -> None:
    """Defect 7b: one user could open bodies without limit (429 with Retry-After beyond)."""
    with serve(max_uploads_per_user=2, body_idle_timeout_seconds=30) as lib:
        infos = [stage(lib, f"cap/{i}", 10) for i in range(3)]
        theirs = stage(lib, "cap/admin", 10, auth=ADMIN)
        stalls = [StalledPut(lib, info["upload_id"], 10, b"x") for info in infos[:2]]
        try:
            wait_until(receiving(*infos[:2]), 10, "two bodies in progress")
            refused = put(lib, infos[2]["upload_id"], b"z" * 10)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert not Path(infos[2]["staging_path"]).exists()
            assert put(lib, theirs["upload_id"], b"a" * 10, auth=ADMIN).status_code == 200
        finally:
            for stall in stalls:
                stall.close()
        # Once the stalled requests end, their slots are free again.
        answers: list[int] = []
        wait_until(
            lambda: (
                answers.append(put(lib, infos[2]["upload_id"], b"z" * 10).status_code)
                or answers[-1] != 429
            ),
            10,
            "a free slot",
        )
        assert answers[-1] == 200


def test_stalled_bodies_do_not_starve_authentication(serve) -> None:
    """Defect 7c: 45+ stalled bodies took all of anyio's 40 threads; logins then hung."""
    users, per_user = 4, 12  # 48 bodies: more than anyio's default 40 threads
    with serve(
        max_uploads_per_user=per_user,
        max_concurrent_uploads=64,  # a quarter kept for newcomers: 48 for users with a body
        body_idle_timeout_seconds=30,
    ) as lib:
        hasher = accounts.password_hasher(lib.settings.security)
        with lib.catalogue.session() as session:
            for name in [f"staller-{u}" for u in range(users)] + ["fresh"]:
                accounts.create_user(session, hasher, name, PASSWORD, UserLevel.READ_APPEND)
        infos = [
            (f"staller-{u}", stage(lib, f"starve/{u}/{i}", 10, auth=(f"staller-{u}", PASSWORD)))
            for u in range(users)
            for i in range(per_user)
        ]
        with ExitStack() as stack:
            for user, info in infos:
                stall = StalledPut(lib, info["upload_id"], 10, b"x", auth=(user, PASSWORD))
                stack.callback(stall.close)
            wait_until(receiving(*(info for _, info in infos)), 20, "48 bodies in progress")
            started = time.monotonic()
            with http(lib) as client:
                response = client.get("/api/v2/files", auth=("fresh", PASSWORD))
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 10


# 12. One writer per upload


def test_a_second_body_for_the_same_upload_is_409_while_the_first_arrives(serve) -> None:
    """Defect 12: two PUTs to one upload both answered 200 and the bytes were mixed up."""
    with serve() as lib:
        info = stage(lib, "rivals/book", 100)
        first = StalledPut(lib, info["upload_id"], 100, b"a" * 40)
        try:
            wait_until(receiving(info), 10, "the first body in progress")
            rival = put(lib, info["upload_id"], b"b" * 100)
            assert rival.status_code == 409, rival.text
            first.sock.sendall(b"a" * 60)
            status, _ = first.response(timeout=10)
        finally:
            first.close()
        assert status == 200
        assert Path(info["staging_path"]).read_bytes() == b"a" * 100


# 8. Failed logins are throttled per user name and per client address


@pytest.fixture
def still_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The login throttle's clock stands still: on a slow or busy machine a 1 s lockout must
    not run out between two requests of one test."""
    clock = SimpleNamespace(monotonic=lambda: 1_000.0)
    monkeypatch.setattr("librarian_dagster.api.login_throttle.time", clock)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The user names whose password the API verified with argon2."""
    seen: list[str] = []
    original = auth_module.verify_password

    def counting(session, hasher, name, password):
        seen.append(name)
        return original(session, hasher, name, password)

    monkeypatch.setattr(auth_module, "verify_password", counting)
    return seen


def login(lib: RunningLibrarian, auth: tuple[str, str], address: str) -> httpx.Response:
    with http(lib, address) as client:
        return client.get("/api/v2/files", auth=auth)


def wrong(auth: tuple[str, str]) -> tuple[str, str]:
    return (auth[0], auth[1] + "-wrong")


@pytest.mark.usefixtures("still_clock")
def test_lockout_starts_after_the_configured_number_of_failures(serve) -> None:
    """Defect 8: after ``login_failures_before_delay`` wrong passwords the next one waits."""
    with serve(login_failures_before_delay=3) as lib:
        for i in range(3):
            assert login(lib, wrong(READER), f"127.0.0.{10 + i}").status_code == 401
        refused = login(lib, wrong(READER), "127.0.0.20")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1


def guess_until_refused(lib: RunningLibrarian, attempts: list[tuple[tuple, str]]) -> int:
    """Send wrong logins until one is 429; return how many were verified (401) before."""
    for count, (auth, address) in enumerate(attempts):
        response = login(lib, auth, address)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            return count
        assert response.status_code == 401, response.text
    raise AssertionError(f"{len(attempts)} wrong logins and never a 429")


@pytest.mark.usefixtures("still_clock")
def test_a_guessed_user_is_refused_unverified_but_cached_logins_pass(
    serve, verifications: list[str]
) -> None:
    """Defect 8: guessing one user's password from many addresses cost argon2 every time."""
    with serve(login_failures_before_delay=3) as lib:
        assert login(lib, READER, "127.0.0.2").status_code == 200  # now cached
        attempts = [(wrong(READER), f"127.0.0.{10 + i}") for i in range(6)]
        verified = guess_until_refused(lib, attempts)
        assert verifications.count(READER[0]) == 1 + verified
        assert login(lib, wrong(READER), "127.0.0.30").status_code == 429
        assert verifications.count(READER[0]) == 1 + verified  # refused without argon2
        assert login(lib, READER, "127.0.0.31").status_code == 200  # cached: not held back


@pytest.mark.usefixtures("still_clock")
def test_a_correct_login_resets_the_users_count(serve) -> None:
    """Defect 8: a correct password clears that user's failures (not an address's)."""
    with serve(login_failures_before_delay=3) as lib:
        addresses = iter(f"127.0.1.{i}" for i in range(1, 50))
        for _ in range(2):
            assert login(lib, wrong(WRITER), next(addresses)).status_code == 401
        assert login(lib, WRITER, next(addresses)).status_code == 200  # verified: resets
        # Without the reset these would be failures 3 to 5: the last one at least refused.
        for _ in range(3):
            assert login(lib, wrong(WRITER), next(addresses)).status_code == 401
        guess_until_refused(lib, [(wrong(WRITER), next(addresses)) for _ in range(4)])


@pytest.mark.usefixtures("still_clock")
def test_one_address_guessing_many_users_is_refused(serve, verifications: list[str]) -> None:
    """Defect 8: guessing many user names from one address was never slowed down.

    An address gets ADDRESS_FACTOR times the failures of a user name (a NAT or a proxy is
    many users) before it waits."""
    guesser = "127.0.0.50"
    with serve(login_failures_before_delay=3) as lib:
        assert login(lib, ADMIN, guesser).status_code == 200  # cached before the guessing
        attempts = [((f"guess-{i}", "password"), guesser) for i in range(30)]
        assert guess_until_refused(lib, attempts) == 3 * ADDRESS_FACTOR
        before = len(verifications)
        assert login(lib, WRITER, guesser).status_code == 429  # right password, not verified
        assert len(verifications) == before
        assert login(lib, ADMIN, guesser).status_code == 200  # cached
        assert login(lib, WRITER, "127.0.0.51").status_code == 200  # another address


def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped body is the client's doing: no 500 in the log, its data and slot freed."""
    with serve(max_uploads_per_user=1) as lib, caplog.at_level("WARNING"):
        info = stage(lib, "hangup/book", 100)
        dropped = StalledPut(lib, info["upload_id"], 100, b"x" * 40)
        wait_until(receiving(info), 10, "the body to start")
        dropped.close()
        wait_until(lambda: not Path(info["staging_path"]).exists(), 10, "the partial data to go")
        assert put(lib, info["upload_id"], b"y" * 100).status_code == 200  # slot free again
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.mark.usefixtures("still_clock")
def test_parallel_guesses_are_not_all_verified(serve, verifications: list[str]) -> None:
    """A burst sent before the first failure is recorded: attempts in flight count too."""
    from concurrent.futures import ThreadPoolExecutor

    with serve(login_failures_before_delay=3) as lib:
        guesses = [(wrong(READER), f"127.0.2.{i}") for i in range(1, 41)]
        with ThreadPoolExecutor(max_workers=40) as pool:
            codes = list(pool.map(lambda guess: login(lib, *guess).status_code, guesses))
        assert set(codes) <= {401, 429} and codes.count(429) >= 37, codes
        assert verifications.count(READER[0]) == codes.count(401) <= 3


def test_a_trickling_body_is_cut_off_too(serve) -> None:
    """Slowloris: a byte now and then dodges the idle timeout, not the minimum rate."""
    with serve(body_idle_timeout_seconds=0.4, min_body_bytes_per_second=1000) as lib:
        info = stage(lib, "trickle/book", 1000)  # more than the trickle ever sends
        trickle = StalledPut(lib, info["upload_id"], 1000, b"x")
        cut_off = False
        try:
            # 5 bytes/s for up to 30 s, never idle for 0.4 s: only the rate can stop it, and
            # the server's answer arrives while the client is still sending.
            for _ in range(150):
                time.sleep(0.2)
                if select.select([trickle.sock], [], [], 0)[0]:
                    cut_off = True
                    break
                try:
                    trickle.sock.sendall(b"x")
                except OSError:
                    cut_off = True
                    break
            status, _ = trickle.response(timeout=10)
        finally:
            trickle.close()
        assert cut_off, "the server let a 5 bytes/s body trickle on for 30 s"
        assert status == 408
        assert not Path(info["staging_path"]).exists()


def test_a_few_accounts_cannot_take_every_upload_thread(serve) -> None:
    """The last quarter of the upload threads is for users with no body in flight: two
    accounts holding all their per-user slots leave room for a third user."""
    newcomer = ("newcomer", "newcomer-password-1")
    with serve(
        max_uploads_per_user=4, max_concurrent_uploads=8, body_idle_timeout_seconds=30
    ) as lib:
        with http(lib) as client:
            created = client.post(
                "/api/v2/users",
                json={"name": newcomer[0], "password": newcomer[1], "level": "read_append"},
                auth=ADMIN,
            )
            assert created.status_code == 201, created.text
        stalls = []
        try:
            for user in (WRITER, ADMIN):
                infos = [stage(lib, f"hog/{user[0]}/{i}", 10, auth=user) for i in range(4)]
                for info in infos:
                    stalls.append(StalledPut(lib, info["upload_id"], 10, b"x", auth=user))
            codes = []
            for stall in stalls:
                try:
                    codes.append(stall.response(timeout=0.5)[0])
                except TimeoutError:
                    codes.append(0)  # admitted: still waiting for its body
            assert codes.count(0) == 6 and codes.count(429) == 2, codes
            mine = stage(lib, "newcomer/book", 10, auth=newcomer)
            assert put(lib, mine["upload_id"], b"y" * 10, auth=newcomer).status_code == 200
        finally:
            for stall in stalls:
                stall.close()
