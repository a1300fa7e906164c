"""The dashboard: a static single-page app served at `/`, built on the Platform API itself.

`GET /` answers `index.html`; `GET /dashboard/{name}` answers one file of `static/`
by its exact name. The names come from an allow-list made once at import from the
regular files of `static/` (symlinks are skipped, not followed), so no part of a
request is ever joined to a path: `..`, encoded or absolute names simply are not
in the list (404). The files are read and gzipped once, at import.

Every answer carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only (no inline script: customer strings that reach
the page as markup could not run), refuses framing, and an ETag so a browser
revalidates (`Cache-Control: no-cache`) and gets a 304 when nothing changed.
"""

from __future__ import annotations

import gzip
import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from slipway.services.gateway.http.errors import ErrorBody
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("dashboard")

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    """One file of the dashboard, as served: its bytes, gzipped bytes and validator."""

    body: bytes
    gzipped: bytes | None  # None when gzip would not make it smaller
    content_type: str
    etag: str


def _load(folder: Path) -> dict[str, Asset]:
    """Every regular file below `folder` with a known type, by its name relative to it."""
    assets: dict[str, Asset] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if not stat.S_ISREG(mode):  # a symlink (or anything odd) is not served
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None:
            continue
        body = path.read_bytes()
        squeezed = gzip.compress(body, mtime=0)
        etag = hashlib.sha256(body).hexdigest()[:20]
        assets[path.relative_to(folder).as_posix()] = Asset(
            body, squeezed if len(squeezed) < len(body) else None, content_type, etag
        )
    return assets


ASSETS = _load(STATIC)


def _answer(request: web.Request, asset: Asset) -> web.Response:
    """The asset, gzipped when the browser takes it, or 304 when its copy is current."""
    gzipped = asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", "")
    # A distinct validator per encoding: the two bodies are different representations.
    etag = f'"{asset.etag}-gz"' if gzipped else f'"{asset.etag}"'
    headers = {**SECURITY_HEADERS, "ETag": etag, "Vary": "Accept-Encoding"}
    offered = {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}
    if etag in offered or "*" in offered:
        return web.Response(status=304, headers=headers)
    if gzipped:
        assert asset.gzipped is not None
        headers["Content-Encoding"] = "gzip"
        body = asset.gzipped
    else:
        body = asset.body
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


def _not_found(what: str) -> web.Response:
    answer = reply(ErrorBody(id="not_found", message=f"{what} is not part of the dashboard."), 404)
    answer.headers.update(SECURITY_HEADERS)
    return answer


@routes.get("/", summary="The dashboard", page=True, public=True, extension=True)
async def index(request: web.Request) -> web.Response:
    return _answer(request, ASSETS["index.html"])


@routes.get(
    "/dashboard/{name:.+}",
    summary="A file of the dashboard",
    page=True,
    public=True,
    extension=True,
)
async def asset(request: web.Request) -> web.Response:
    # An exact look-up in the allow-list: the name is never made into a path.
    found = ASSETS.get(request.match_info["name"])
    if found is None:
        return _not_found("That file")
    return _answer(request, found)
