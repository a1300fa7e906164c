"""The gateway serves the dashboard: `/` and an allow-list of files, with strict headers.

Against the real gateway (tests/gateway's `stack`). Paths that try to leave the static
folder are sent byte for byte over a raw socket, so no client tidies them first.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path

import pytest
from yarl import URL

from slipway.services.gateway.web import pages
from tests.gateway.conftest import Stack

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def raw_get(url: str, target: str, headers: str = "") -> tuple[int, bytes]:
    """GET `target` exactly as written (no normalisation): the status and the body."""
    parsed = URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    request = f"GET {target} HTTP/1.1\r\nHost: {parsed.host}:{parsed.port}\r\n{headers}"
    writer.write(f"{request}Connection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_index_is_served_with_the_security_headers(stack: Stack) -> None:
    """`/` answers the app's HTML to a browser's Accept, with CSP, no framing and no sniffing."""
    async with stack.session.get(stack.url + "/", headers={"Accept": BROWSER_ACCEPT}) as answer:
        body = await answer.text()
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-cache"
        assert answer.headers["ETag"]
    assert '<script type="module" src="/dashboard/boot.js">' in body


async def test_every_asset_is_served_with_its_type(stack: Stack) -> None:
    """Each file of the allow-list answers 200 with its content type and its exact bytes."""
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for name, asset in pages.ASSETS.items():
        async with stack.session.get(f"{stack.url}/dashboard/{name}") as answer:
            assert answer.status == 200, name
            assert answer.headers["Content-Type"].startswith(
                types.get(Path(name).suffix, "text/html")
            ), name
            assert answer.headers["Content-Security-Policy"] == CSP
            assert await answer.read() == asset.body  # aiohttp undid the gzip, if any


async def test_an_unchanged_asset_answers_304(stack: Stack) -> None:
    """A browser revalidating with the ETag it holds gets 304 and no body."""
    url = f"{stack.url}/dashboard/app.js"
    async with stack.session.get(url) as first:
        etag = first.headers["ETag"]
    async with stack.session.get(url, headers={"If-None-Match": etag}) as again:
        assert again.status == 304
        assert await again.read() == b""
        assert again.headers["ETag"] == etag


async def test_gzip_is_sent_to_a_browser_that_takes_it(stack: Stack) -> None:
    """With `Accept-Encoding: gzip` the script comes compressed, and decompresses to itself."""
    status, body = await raw_get(stack.url, "/dashboard/app.js", "Accept-Encoding: gzip\r\n")
    assert status == 200
    assert gzip.decompress(body) == pages.ASSETS["app.js"].body
    assert len(body) < len(pages.ASSETS["app.js"].body)


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/../pyproject.toml",
        "/dashboard/../../../../etc/passwd",
        "/dashboard/%2e%2e/pages.py",
        "/dashboard/%2e%2e%2fpages.py",
        "/dashboard/..%2F..%2Fsetup.py",
        "/dashboard/pages/..%2f..%2fpages.py",
        "/dashboard//etc/passwd",
        "/dashboard/%2Fetc%2Fpasswd",
        "/dashboard/pages.py",
        "/dashboard/sessions.py",
        "/dashboard/static/app.js",
        "/dashboard/app.js%00.html",
        "/dashboard/.",
        "/dashboard/pages",
    ],
)
async def test_no_name_outside_the_allow_list_is_served(stack: Stack, target: str) -> None:
    """Traversal, encoded, absolute and near-miss names answer 404 (or 400), never a file."""
    status, body = await raw_get(stack.url, target)
    assert status in (400, 404), (target, status)
    assert b"root:" not in body and b"import" not in body and b"[project]" not in body


def test_a_symlink_in_the_folder_is_not_served(tmp_path: Path) -> None:
    """The allow-list takes regular files only: a link to a secret beside them is left out."""
    (tmp_path / "secret.js").write_text("secret")
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "app.js").write_text("app")
    (folder / "link.js").symlink_to(tmp_path / "secret.js")
    (folder / "notes.txt").write_text("not a served type")
    (folder / ".hidden.js").write_text("dotfile")
    assert sorted(pages._load(folder)) == ["app.js"]


async def test_pages_are_not_part_of_the_api_document(stack: Stack) -> None:
    """/openapi.json lists no dashboard path: the dashboard uses the API, it is not in it."""
    document = await stack.anonymous().ok("GET", "/openapi.json")
    assert "/" not in document["paths"]
    assert not any(path.startswith("/dashboard") for path in document["paths"])


def test_every_imported_module_is_in_the_allow_list() -> None:
    """Each `import ... from "./x.js"` or `import("./x.js")` of the app resolves to a served
    file (else a blank page)."""
    for name, asset in pages.ASSETS.items():
        if not name.endswith(".js"):
            continue
        text = asset.body.decode()
        imported = re.findall(r'from\s+"(\.{1,2}/[^"]+)"', text)
        imported += re.findall(r'import\("(\.{1,2}/[^"]+)"\)', text)  # boot.js loads app.js
        for target in imported:
            resolved = (Path("/") / Path(name).parent / target).resolve().relative_to("/")
            assert resolved.as_posix() in pages.ASSETS, (name, target)


def test_no_script_writes_markup() -> None:
    """No script builds HTML from strings: customer data reaches the page as text only."""
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(")
    for name, asset in pages.ASSETS.items():
        if name.endswith(".js"):
            text = asset.body.decode()
            assert not [sink for sink in sinks if sink in text], name
