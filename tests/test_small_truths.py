"""Issue 10, item 6 ("small truths"): upload ids and ``upload status``, an 80-column search
table, ``*`` that stops at ``/``, sizes in human units, empty directories refused, and the
README's Python example, run as written."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from librarian_dagster.catalogue.database import Catalogue
from librarian_dagster.catalogue.models import File, IncomingTransfer
from librarian_dagster.cli import stores_cmd
from librarian_dagster.cli.search_table import short_checksum
from librarian_dagster.client import LibrarianClient, LibrarianError
from librarian_dagster.jobs.ingest import book_materialization
from librarian_dagster.services import accounts
from librarian_dagster.services.files import (
    glob_matches,
    glob_to_like,
    glob_to_regex,
    search_files,
)
from librarian_dagster.services.inbox import find_books, register_books
from librarian_dagster.services.ingest import IngestOutcome
from librarian_dagster.settings import LibrarianSettings
from librarian_dagster.states import TransferStatus, UserLevel
from librarian_dagster.storage.checksums import hash_path, is_empty_directory
from librarian_dagster.units import human_size
from librarian_dagster.wire import FileQuery
from tests.api_helpers import api_client, credentials
from tests.client_helpers import RunningLibrarian, count, make_file, running_librarian
from tests.ingest_helpers import Site, open_site
from tests.test_cli_client import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    from librarian_dagster.cli.main import app

    return runner.invoke(app, list(args), env=env)


# -- 1. upload --no-wait prints ids; upload status ID... ------------------------------------------


def _status_lines(*ids: int) -> list[str]:
    result = invoke("upload", "status", *map(str, ids))
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def _wait_stored(*ids: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _status_lines(*ids)
        if all(line.split("  ")[1] == "stored" for line in lines):
            return lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)


def test_upload_no_wait_prints_ids_and_upload_status_shows_them(
    configured: RunningLibrarian, tmp_path: Path
) -> None:
    a, b = make_file(tmp_path / "src" / "a.dat"), make_file(tmp_path / "src" / "b.dat")
    result = invoke("upload", "--no-wait", str(a), str(b), "nowait/")
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.stdout.splitlines()]  # nothing but ids on stdout
    assert len(ids) == 2 and len(set(ids)) == 2
    assert f"staged (upload {ids[0]})  nowait/a.dat  {hash_path(a)}" in result.stderr

    lines = _wait_stored(*ids)
    assert lines == [f"{ids[0]}  stored  nowait/a.dat", f"{ids[1]}  stored  nowait/b.dat"]
    assert _status_lines(ids[1]) == [f"{ids[1]}  stored  nowait/b.dat"]  # GET /uploads/{id}
    as_json = invoke("upload", "status", "--json", str(ids[0]))
    assert json.loads(as_json.stdout)["upload_id"] == ids[0]

    assert_one_line_error(invoke("upload", "status", "999"), "no upload 999", "404")
    assert invoke("upload", "status").exit_code == 2  # usage: at least one id
    assert invoke("upload", "status", "x").exit_code == 2  # ids are numbers


def test_upload_status_shows_why(configured: RunningLibrarian, tmp_path: Path) -> None:
    with configured.client() as client:
        response = client.request("POST", "/uploads", json={"name": "given/up", "size": 1})
        upload_id = response.json()["upload_id"]
        client.cancel_upload(upload_id)
    user = credentials(UserLevel.READ_APPEND)[0]
    assert _status_lines(upload_id) == [f"{upload_id}  cancelled  given/up  cancelled by {user}"]


def test_the_pinned_upload_form_still_works(configured: RunningLibrarian, tmp_path: Path) -> None:
    """``upload LOCAL DEST`` as before, even for a local book named like the sub-command."""
    local = make_file(tmp_path / "status", 300)  # tmp_path is the working directory
    result = invoke("upload", "./status", "pinned/status")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"stored  pinned/status  {hash_path(local)}  300 B")
    result = invoke("upload", "--transfer", "http", str(local), "pinned/again")
    assert result.exit_code == 0, result.output
    helped = invoke("upload", "--help", env={"COLUMNS": "100"})
    assert helped.exit_code == 0 and "librarian upload [OPTIONS] {LOCAL}... {DEST}" in helped.stdout
    assert "librarian upload status ID..." in helped.stdout
    assert "upload status" in invoke("--help").stdout


# -- 2. the search table fits 80 columns ----------------------------------------------------------


def test_search_table_fits_80_columns(configured: RunningLibrarian, tmp_path: Path) -> None:
    book = tmp_path / "src" / "obs_0001"
    make_file(book / "raw" / "frame.dat", 1_500_000)
    pairs = [(book, "2026/11/25/obs_0001")]
    pairs += [(make_file(tmp_path / "src" / f"f{i}", 2000 * i), f"2026/11/25/f{i}") for i in (1, 2)]
    long_name = "2026/11/25/" + "a_rather_long_segment_" * 6 + "end.dat"
    pairs.append((make_file(tmp_path / "src" / "long", 10), long_name))
    with configured.client() as client:
        infos = client.upload_many(pairs)
    env = {"COLUMNS": "80"}

    narrow = invoke("search", "--name", "2026/**", env=env)
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert lines[0].split() == ["name", "size", "created", "checksum"]
    obs = next(line for line in lines if line.startswith("2026/11/25/obs_0001/"))
    checksum = str(infos[0].checksum)
    assert short_checksum(checksum) in obs and checksum not in narrow.stdout
    assert re.search(r"xxh3_128:[0-9a-f]{8}…$", obs)
    assert "1.4 MiB" in obs and "3.9 KiB" in narrow.stdout  # human units
    assert "end.dat" in narrow.stdout  # the long name folds, never truncated
    assert "".join(line.split("  ")[0] for line in lines[1:] if line).count("a_rather_long") == 6

    wide = invoke("search", "--name", "2026/**", "--wide", env=env)
    assert wide.exit_code == 0, wide.output
    header, *rows = wide.stdout.splitlines()
    assert header.split() == ["name", "size", "bytes", "checksum", "created", "uploader", "source"]
    assert len(rows) == 4  # one line per file, however wide
    assert checksum in wide.stdout and long_name in wide.stdout
    assert credentials(UserLevel.READ_APPEND)[0] in rows[0] and "1500000" in rows[0]


def test_short_checksum() -> None:
    assert short_checksum("xxh3_128:" + "1a2b3c4d" * 4) == "xxh3_128:1a2b3c4d…"
    assert short_checksum("md5:12") == "md5:12"


# -- 3. `*` stops at `/`, `**` does not, on SQLite and PostgreSQL ------------------------------


ALL_NAMES = [
    "2026/11/a",
    "2026/11/25/x",
    "2026/11/b_c",
    "2026/11/25/y/z",
    "2026/11/x",
    "2026/11/%",
    "top",
    "2026/11bb25/x",
]
GLOB_CASES = [
    ("2026/11/*", ["2026/11/a", "2026/11/b_c", "2026/11/x", "2026/11/%"]),
    ("2026/11/**", [n for n in ALL_NAMES if n.startswith("2026/11/")]),
    ("2026/*/x", ["2026/11/x", "2026/11bb25/x"]),
    ("2026/**/x", ["2026/11/25/x", "2026/11/x", "2026/11bb25/x"]),
    ("2026/11/?", ["2026/11/a", "2026/11/x", "2026/11/%"]),
    ("2026/11?25/x", []),  # ? does not match / either
    ("*", ["top"]),
    ("**", None),  # everything
    ("2026/11/b_c", ["2026/11/b_c"]),  # _ and % are literal characters
    ("2026/11/b?c", ["2026/11/b_c"]),
    ("2026/11/%", ["2026/11/%"]),
    ("*/*/*/x", ["2026/11/25/x"]),
    ("2026/11/25/y/*", ["2026/11/25/y/z"]),
]


def _add_files(catalogue: Catalogue, names: list[str]) -> None:
    with catalogue.session() as session:
        for name in names:
            session.add(
                File(
                    name=name,
                    size=1,
                    checksum="xxh3_128:" + "0" * 32,
                    uploader="u",
                    source="here",
                    created_at=datetime.now(UTC),
                )
            )


def _search(catalogue: Catalogue, name: str, limit: int = 1000) -> list[list[str]]:
    """Every page of a search, following the cursor."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        with catalogue.session() as session:
            rows, cursor = search_files(session, FileQuery(name=name, limit=limit, cursor=cursor))
            pages.append([row.name for row in rows])
        if cursor is None:
            return pages


def test_star_does_not_cross_a_slash(catalogue: Catalogue) -> None:
    _add_files(catalogue, ALL_NAMES)
    for pattern, expected in GLOB_CASES:
        wanted = ALL_NAMES if expected is None else expected
        found = [name for page in _search(catalogue, pattern) for name in page]
        assert found == [name for name in ALL_NAMES if name in wanted], pattern
        assert found == [name for name in ALL_NAMES if glob_matches(pattern, name)], pattern


def test_pages_stay_full_when_the_like_prefilter_lets_through_what_the_glob_refuses(
    catalogue: Catalogue,
) -> None:
    """Keyset paging is exact: every page but the last is full, nothing skipped or repeated."""
    names = []
    for i in range(30):
        names.append(f"run/{i:02d}")  # matches run/*
        names += [f"run/{i:02d}/deep", f"run/{i:02d}/deeper/still"]  # LIKE run/% only
    _add_files(catalogue, names)
    for limit in (1, 4, 7, 30):
        pages = _search(catalogue, "run/*", limit)
        assert all(len(page) == limit for page in pages[:-1]), (limit, pages)
        assert [name for page in pages for name in page] == [f"run/{i:02d}" for i in range(30)]
    assert len([n for page in _search(catalogue, "run/**", 5) for n in page]) == 90


def test_a_glob_with_many_stars_costs_little(catalogue: Catalogue) -> None:
    """Backtracking (``re``) would take ages on this; both databases answer at once."""
    _add_files(catalogue, ["a" * 500 + "/" + "a" * 400 + "b"])
    started = time.monotonic()
    assert _search(catalogue, "*a" * 16 + "b") == [[]]
    assert _search(catalogue, "**a" * 16 + "b") == [["a" * 500 + "/" + "a" * 400 + "b"]]
    assert time.monotonic() - started < 5


def test_glob_translations_agree() -> None:
    assert glob_to_like("2026/11/*") == "2026/11/%"
    assert glob_to_like("a_b%c**d?") == "a\\_b\\%c%d_"
    assert glob_to_regex("2026/11/*") == "^2026/11/[^/]*$"
    assert glob_to_regex("a.b/**/c?") == "^a\\.b/.*/c[^/]$"
    for pattern, expected in GLOB_CASES:
        for name in ALL_NAMES:
            exact = re.search(glob_to_regex(pattern), name) is not None
            assert glob_matches(pattern, name) == exact, (pattern, name)
            if expected is not None:
                assert exact == (name in expected), (pattern, name)


def test_the_glob_rule_is_documented() -> None:
    description = FileQuery.model_fields["name"].description or ""
    assert "** is any run, / included" in description and "neither crossing /" in description


# -- 4. sizes in human units ---------------------------------------------------------------------


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 512, 1023, 1024, 1536)] == [
        "0 B",
        "512 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
    ]
    assert human_size(int(1.5 * 2**30)) == "1.5 GiB"
    assert human_size(2**20 - 1) == "1.0 MiB"  # not "1024.0 KiB"
    assert human_size(15 * 2**40) == "15.0 TiB"
    assert stores_cmd._human is human_size  # one function, not a copy


def test_book_materialization_shows_the_size_in_human_units_too() -> None:
    outcome = IngestOutcome(
        1, "2026/x", "stored", size=int(1.5 * 2**30), checksum="c", store="main", path="/p"
    )
    metadata = book_materialization(outcome).metadata
    assert metadata["size"].value == int(1.5 * 2**30)  # bytes stay
    assert metadata["size (human)"].value == "1.5 GiB"


def test_locate_shows_human_units(configured: RunningLibrarian, tmp_path: Path) -> None:
    local = make_file(tmp_path / "f", 1_500_000)
    assert invoke("upload", str(local), "human/f").exit_code == 0
    located = invoke("locate", "human/f")
    assert "size      1.4 MiB (1500000 bytes, file)" in located.stdout


# -- 5. an empty directory is not a book ---------------------------------------------------------


def _empty_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "other").mkdir()
    return root


def test_empty_directory_checks(tmp_path: Path) -> None:
    assert is_empty_directory(_empty_tree(tmp_path / "e"))
    make_file(tmp_path / "f", 0)
    (tmp_path / "e" / "sub" / "deeper" / "nothing").write_bytes(b"")
    assert not is_empty_directory(tmp_path / "e")  # an empty file is content
    assert not is_empty_directory(tmp_path / "f")  # a file is no directory
    assert not is_empty_directory(tmp_path / "absent")


def test_client_and_cli_refuse_an_empty_directory(
    configured: RunningLibrarian, tmp_path: Path
) -> None:
    empty = _empty_tree(tmp_path / "empty")
    for transfer in ("local", "http"):
        with (
            configured.client() as client,
            pytest.raises(LibrarianError, match="is an empty directory"),
        ):
            client.upload(empty, "empty/book", transfer=transfer)  # type: ignore[arg-type]
    result = invoke("upload", str(empty), str(make_file(tmp_path / "full")), "empty/")
    assert_one_line_error(result, "empty is an empty directory", "not a book")
    assert count(configured, IncomingTransfer) == 0  # refused before anything was staged


def _tar_of_directories(*names: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in names:
            member = tarfile.TarInfo(name)
            member.type = tarfile.DIRTYPE
            archive.addfile(member)
    return buffer.getvalue()


def test_api_refuses_an_empty_directory_with_400(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    auth = credentials(UserLevel.READ_APPEND)
    settings = make_settings(database_url=database_url)
    with api_client(settings) as client:

        def stage(name: str) -> dict:
            response = client.post("/api/v2/uploads", json={"name": name, "size": 0}, auth=auth)
            assert response.status_code == 201, response.text
            return response.json()

        streamed = stage("empty/streamed")
        response = client.put(
            f"/api/v2/uploads/{streamed['upload_id']}/content",
            content=_tar_of_directories("a", "a/b"),
            headers={"content-type": "application/x-tar"},
            auth=auth,
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        detail = response.json()["detail"]
        assert "'empty/streamed' is an empty directory" in detail and "not a book" in detail
        assert not Path(streamed["staging_path"]).exists()  # nothing of it is kept

        copied = stage("empty/copied")  # a shared-filesystem copy, then commit
        _empty_tree(Path(copied["staging_path"]))
        empty_checksum = str(hash_path(Path(copied["staging_path"])))
        response = client.post(
            f"/api/v2/uploads/{copied['upload_id']}/commit",
            json={"checksum": empty_checksum},
            auth=auth,
        )
        assert response.status_code == 400
        assert "'empty/copied' is an empty directory" in response.json()["detail"]

        zero_byte_file = stage("empty/file")  # an empty *file* is a book
        response = client.put(
            f"/api/v2/uploads/{zero_byte_file['upload_id']}/content",
            content=b"",
            headers={"content-type": "application/octet-stream"},
            auth=auth,
        )
        assert response.status_code == 200, response.text
        zero = str(hash_path(make_file(tmp_path / "zero", 0)))
        response = client.post(
            f"/api/v2/uploads/{zero_byte_file['upload_id']}/commit",
            json={"checksum": zero},
            auth=auth,
        )
        assert response.status_code == 202, response.text
    site = open_site(settings)
    with site.catalogue.session() as session:
        statuses = dict(
            session.execute(select(IncomingTransfer.name, IncomingTransfer.status)).all()
        )
    assert statuses == {
        "empty/streamed": TransferStatus.INITIATED,
        "empty/copied": TransferStatus.INITIATED,  # refused: nothing changed
        "empty/file": TransferStatus.STAGED,
    }


def test_inbox_refuses_an_empty_directory(
    make_settings: Callable[..., LibrarianSettings], database_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = make_settings(database_url=database_url, extra_toml=f'inbox = "{inbox}"')
    site: Site = open_site(settings)
    book = _empty_tree(inbox / "obs_empty")
    (inbox / "obs_empty.done").write_text("")
    full = make_file(inbox / "obs_full" / "data.bin", 10).parent
    (inbox / "obs_full.done").write_text("")

    lines = register_books(site.catalogue, settings, find_books(settings)).lines
    assert lines[0].startswith("inbox obs_empty: refused ('obs_empty' is an empty directory")
    assert lines[1:] == ["inbox obs_full: staged"]
    assert book.is_dir() and not (inbox / "obs_empty.done").exists()  # left where it was
    assert "is an empty directory" in (inbox / "obs_empty.failed").read_text()
    assert not full.exists()
    with site.catalogue.session() as session:
        assert list(session.scalars(select(IncomingTransfer.name))) == ["obs_full"]
    assert register_books(site.catalogue, settings, find_books(settings)).lines == []


# -- 6. the README's Python example runs as written ---------------------------------------------


def _readme_block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [block for block in blocks if containing in block]
    return block


def test_readme_python_example_runs(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    snippet = _readme_block("python", "LibrarianClient.from_info")
    # The client.toml of the README's "A first upload", pointed at this librarian.
    setup = _readme_block("bash", "client.toml")
    toml = re.search(r"<<'TOML'\n(.*?)\nTOML\n", setup, re.S)
    assert toml is not None
    password_var = re.search(r'password_env = "(\w+)"', toml.group(1))
    assert password_var is not None and f"export {password_var.group(1)}=" in setup
    with running_librarian(make_settings()) as librarian:
        settings = librarian.settings
        hasher = accounts.password_hasher(settings.security)
        with librarian.catalogue.session() as session:
            accounts.create_user(session, hasher, "alice", "alice-password", UserLevel.READ_APPEND)
        config = tmp_path / "client.toml"
        config.write_text(toml.group(1).replace("http://127.0.0.1:8080", librarian.url) + "\n")
        work = tmp_path / "work"
        make_file(work / "obs_0001" / "raw" / "frame.dat", 3000)
        make_file(work / "a.dat", 10)
        make_file(work / "b.dat", 20)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIBRARIAN_")}
        env |= {"LIBRARIAN_CLIENT_CONFIG": str(config), password_var.group(1): "alice-password"}
        done = subprocess.run(
            [sys.executable, "-c", snippet],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        with LibrarianClient(librarian.url, "alice", "alice-password") as client:
            stored = [f.name for f in client.search_files(name="**")]
            uploaded = re.findall(r'"(2026/11/\d+/[\w.]+)"', snippet)
            assert stored and sorted(stored) == sorted(set(uploaded))
            assert {f.uploader for f in client.search_files(name="**")} == {"alice"}
