"""The API docs at ``/schema`` work offline, and the OpenAPI document says what the API does.

Swagger UI's files come from a pinned package and are served by the app under
``/schema/assets/`` (``api/openapi.py``). The proof: a headless Chromium, for which no host but
127.0.0.1 resolves and every other connection goes to a dead proxy, opens ``/schema`` of a real
server; every operation must be in the rendered page, and Chromium's net log must show that the
page asked no other host for anything (no CDN, no web font, no favicon).

Chromium is Debian's package (``apt-get install -y chromium``; ``python3 dev.py test`` installs
it when run as root). These tests fail, not skip, without it.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from librarian_dagster.api.openapi import ASSETS_PATH, PROBLEM_JSON, SECURITY_SCHEME
from librarian_dagster.settings import LibrarianSettings
from tests.client_helpers import running_librarian

CHROMIUM = Path(os.environ.get("LIBRARIAN_TEST_CHROMIUM", "/usr/bin/chromium"))
PUBLIC_OPERATIONS = {("get", "/api/v2/ping")}
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# Nothing but loopback: names do not resolve, and anything that still tries goes to a dead
# proxy. The rest only quiets Chromium's own background traffic (updates, sign-in).
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)


@pytest.fixture
def docs_url(make_settings: Callable[..., LibrarianSettings]) -> Iterator[str]:
    with running_librarian(make_settings()) as librarian:
        yield librarian.url


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the API docs are checked in a headless Chromium. Install it"
            " with `apt-get install -y chromium` (`python3 dev.py test` does so when run as"
            " root), or point LIBRARIAN_TEST_CHROMIUM at a Chromium binary."
        )
    return CHROMIUM


def run_chromium(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(chromium()), *OFFLINE_FLAGS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd)},  # its profile and caches, not the user's
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


class _Assets(HTMLParser):
    """The URLs a page loads: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("href") if tag == "link" else attributes.get("src")
        if url and tag in {"script", "link", "img"}:
            self.urls.append(url)


def page_requests(net_log: Path) -> list[str]:
    """The URLs Chromium fetched for a page on 127.0.0.1, whatever their host.

    Each request is keyed by the site of the page it is for; Chromium's own requests (updates,
    sign-in) are keyed otherwise and are no part of the page.
    """
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and event["params"].get("network_isolation_key", "").split()[:1] == ["http://127.0.0.1"]
    ]


def test_the_docs_page_loads_only_assets_the_app_serves(docs_url: str) -> None:
    page = httpx.get(f"{docs_url}/schema", timeout=30)  # no credentials
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) >= 4, parser.urls  # script, preset, stylesheet, favicon
    for url in parser.urls:
        assert url.startswith(f"{ASSETS_PATH}/"), f"{url} is not served by the app"
        absolute = urljoin(f"{docs_url}/schema", url)
        assert urlsplit(absolute).hostname == "127.0.0.1"
        asset = httpx.get(absolute, timeout=30)  # no credentials either
        assert asset.status_code == 200, (url, asset.text[:200])
        expected = CONTENT_TYPES[Path(urlsplit(url).path).suffix]
        assert asset.headers["content-type"].split(";")[0] == expected, url
        assert len(asset.content) > 500, url
    # Nothing else of the package is served, and a miss is a problem like any other 404.
    for name in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "nope.js"):
        missing = httpx.get(f"{docs_url}{ASSETS_PATH}/{name}", timeout=30)
        assert missing.status_code == 404, name
        assert missing.headers["content-type"].startswith(PROBLEM_JSON)


def test_the_docs_render_in_a_browser_with_no_network(docs_url: str, tmp_path: Path) -> None:
    operations = httpx.get(f"{docs_url}/schema/openapi.json", timeout=30).json()["paths"]
    summaries = [op["summary"] for path in operations.values() for op in path.values()]
    assert "Name, version and health" in summaries and len(summaries) >= 10
    net_log = tmp_path / "net-log.json"
    dom = html.unescape(
        run_chromium(
            f"--log-net-log={net_log}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{docs_url}/schema",
            cwd=tmp_path,
        ).stdout
    )
    assert "opblock-summary-description" in dom, f"Swagger UI did not render:\n{dom[:3000]}"
    missing = [summary for summary in summaries if summary not in dom]
    assert not missing, f"operations not rendered: {missing}"
    assert ">librarian<" in dom.replace(" ", "")  # the document's title, as Swagger UI shows it
    requested = page_requests(net_log)
    assert f"{docs_url}{ASSETS_PATH}/swagger-ui-bundle.js" in requested, requested
    elsewhere = [url for url in requested if not url.startswith(f"{docs_url}/")]
    assert not elsewhere, f"the docs page asked other hosts: {elsewhere}"


def test_the_openapi_document_has_its_title_auth_and_problems(docs_url: str) -> None:
    document = httpx.get(f"{docs_url}/schema/openapi.json", timeout=30).json()
    assert document["info"]["title"] == "librarian"
    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    assert document["security"] == [{SECURITY_SCHEME: []}]
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["properties"])
    seen = set()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            seen.add((method, path))
            security = operation.get("security", document["security"])
            responses = operation["responses"]
            if (method, path) in PUBLIC_OPERATIONS:
                assert {} in security, (method, path)
                assert "401" not in responses and "403" not in responses
            else:
                assert security == [{SECURITY_SCHEME: []}], (method, path)
                assert {"401", "403", "429"} <= set(responses), (method, path)
            assert {"400", "500"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) < 400:
                    continue
                schema = response["content"][PROBLEM_JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path, status)
    assert seen >= PUBLIC_OPERATIONS and len(seen) >= 10
