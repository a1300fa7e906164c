"""Build sources: gzipped tarballs uploaded for a build, stored encrypted, fetched by the builder.

    POST /sources                      → {source_blob: {put_url, get_url}}
    PUT  <put_url>   (the tarball)     → 200
    GET  <get_url>   (the builder)     → the tarball

As with Heroku's presigned URLs, `put_url` and `get_url` carry their own
authority: an HMAC-SHA256 signature over the operation, the source id and an
expiry, under a key kept in `<SLIPWAY_HOME>/gateway/url-signing.key` (0600).
The builder fetches from loopback with no user token.

A source is stored as one envelope record (purpose `build-source`) in
`<SLIPWAY_HOME>/gateway/sources/<id>.enc`, bound to team, app, kind
"build-source" and the source id, so a file moved to another source or team
does not decrypt. It is deleted when the build using it finishes, or after
`source_ttl` seconds, whichever comes first.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import structlog
from aiohttp import web

from slipway.contracts.keyring import Purpose
from slipway.libs.crypto import Binding, DecryptionFailed, envelope
from slipway.libs.errors import Forbidden, Gone, NotFound
from slipway.services.gateway import store, views
from slipway.services.gateway.auth import Action, app_for, principal
from slipway.services.gateway.errors import DataIntegrity, InvalidParams, PayloadTooLarge
from slipway.services.gateway.passthrough import raw
from slipway.services.gateway.routing import Routes, reply
from slipway.services.gateway.state import GATEWAY, Gateway
from slipway.services.gateway.store import new_uuid, timestamp
from slipway.services.gateway.sweeper import Sweeper

log = structlog.get_logger("slipway.gateway.sources")

routes = Routes("sources")

KIND = "build-source"
_CHUNK = 256 * 1024


# ---- signed URLs ----------------------------------------------------------------------------


def signing_key(gw: Gateway) -> bytes:
    """The gateway's URL-signing key, created (0600) on first use."""
    path = gw.settings.state_dir("gateway") / "url-signing.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def sign(gw: Gateway, op: str, ident: str, expires: int) -> str:
    """The signature that lets anyone holding it do `op` on `ident` until `expires`."""
    message = f"{op}\n{ident}\n{expires}".encode()
    return hmac.new(signing_key(gw), message, hashlib.sha256).hexdigest()


def signed_url(gw: Gateway, path: str, op: str, ident: str, ttl: float) -> str:
    """`<api url><path>?expires=..&sig=..`, valid for `ttl` seconds."""
    expires = int(time.time() + ttl)
    query = urlencode({"expires": expires, "sig": sign(gw, op, ident, expires)})
    return f"{gw.api_url}{path}?{query}"


def check_signature(request: web.Request, op: str, ident: str) -> None:
    """Forbidden unless the request's `expires` and `sig` are valid for `op` on `ident`."""
    gw = request.app[GATEWAY]
    try:
        expires = int(request.query.get("expires", ""))
    except ValueError:
        raise Forbidden("This URL is not signed: ask the API for a new one.") from None
    wanted = sign(gw, op, ident, expires)
    if not hmac.compare_digest(wanted, request.query.get("sig", "")):
        raise Forbidden("This URL's signature is not valid.")
    if expires < time.time():
        raise Forbidden("This URL has expired: ask the API for a new one.")


# ---- rows and files -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    id: str
    team_id: str
    app_id: str
    user_id: str
    size: int | None
    checksum: str | None
    expires_at: float


def source_path(gw: Gateway, source_id: str) -> Path:
    folder = gw.settings.state_dir("gateway") / "sources"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{source_id}.enc"


def binding(source: Source) -> Binding:
    return Binding(team=source.team_id, app=source.app_id, kind=KIND, record=source.id)


async def get_source(conn: store.Conn, source_id: str) -> Source | None:
    async with conn.execute("SELECT * FROM sources WHERE id = ?", (source_id,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    return Source(
        row["id"],
        row["team_id"],
        row["app_id"],
        row["user_id"],
        row["size"],
        row["checksum"],
        row["expires_at"],
    )


async def new_source(gw: Gateway, team_id: str, app_id: str, user_id: str) -> Source:
    """Record an empty source that expires after `source_ttl`."""
    source = Source(
        new_uuid(), team_id, app_id, user_id, None, None, time.time() + gw.settings.source_ttl
    )
    async with gw.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO sources (id, team_id, app_id, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (source.id, team_id, app_id, user_id, timestamp(), source.expires_at),
        )
    return source


def checksum_of(data: bytes) -> str:
    """Heroku's spelling of a tarball's checksum."""
    return "SHA256:" + hashlib.sha256(data).hexdigest()


async def put_blob(gw: Gateway, source: Source, data: bytes) -> str:
    """Encrypt and store the tarball of `source`; returns its checksum."""
    sealed = await envelope.encrypt(
        gw.bus, source.team_id, Purpose.BUILD_SOURCE, binding(source), data
    )
    path = source_path(gw, source.id)
    partial = path.with_suffix(".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(sealed)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    checksum = checksum_of(data)
    async with gw.db.transaction() as conn:
        await conn.execute(
            "UPDATE sources SET size = ?, checksum = ?, uploaded_at = ? WHERE id = ?",
            (len(data), checksum, timestamp(), source.id),
        )
    return checksum


async def read_blob(gw: Gateway, source: Source) -> bytes:
    """The plaintext tarball of `source`."""
    try:
        sealed = source_path(gw, source.id).read_bytes()
    except FileNotFoundError:
        raise NotFound("Nothing was uploaded to this source.") from None
    try:
        return await envelope.decrypt(
            gw.bus, source.team_id, Purpose.BUILD_SOURCE, binding(source), sealed
        )
    except DecryptionFailed:
        log.error("source.integrity_failed", source=source.id)
        raise DataIntegrity("The stored source failed its integrity check.") from None


async def delete_source(gw: Gateway, source_id: str) -> None:
    """Forget a source: its file first, then its row (a crash between leaves a row to sweep)."""
    source_path(gw, source_id).unlink(missing_ok=True)
    source_path(gw, source_id).with_suffix(".part").unlink(missing_ok=True)
    async with gw.db.transaction() as conn:
        await conn.execute("DELETE FROM sources WHERE id = ?", (source_id,))


async def store_tarball(
    gw: Gateway, app: store.App, user_id: str, data: bytes
) -> tuple[Source, str, str]:
    """A new source holding `data` for `app`: the source, its get_url and its checksum."""
    source = await new_source(gw, app.team_id, app.id, user_id)
    checksum = await put_blob(gw, source, data)
    return source, get_url(gw, source), checksum


def blob_path(source_id: str) -> str:
    return f"/sources/{source_id}/blob"


def get_url(gw: Gateway, source: Source) -> str:
    return signed_url(
        gw, blob_path(source.id), "get", source.id, max(source.expires_at - time.time(), 0)
    )


def put_url(gw: Gateway, source: Source) -> str:
    return signed_url(
        gw, blob_path(source.id), "put", source.id, max(source.expires_at - time.time(), 0)
    )


def source_id_of(gw: Gateway, url: str) -> str | None:
    """The id of this gateway's source a get_url names, else None."""
    prefix = f"{gw.api_url}/sources/"
    if not url.startswith(prefix):
        return None
    ident, _, rest = url[len(prefix) :].partition("/")
    return ident if rest.startswith("blob") else None


class SourceSweeper(Sweeper):
    """Deletes sources past their expiry (unused uploads, builds that never finished)."""

    name = "sources"

    def __init__(self, gw: Gateway) -> None:
        super().__init__(interval=min(60.0, max(gw.settings.source_ttl / 4, 1.0)))
        self.gw = gw

    async def sweep(self) -> None:
        async with self.gw.reader.execute(
            "SELECT id FROM sources WHERE expires_at < ?", (time.time(),)
        ) as cursor:
            expired = [row["id"] for row in await cursor.fetchall()]
        for source_id in expired:
            await delete_source(self.gw, source_id)
        if expired:
            log.info("sources.expired", count=len(expired))


# ---- endpoints ------------------------------------------------------------------------------


def _view(gw: Gateway, source: Source) -> views.Source:
    return views.Source(
        source_blob=views.SourceUrls(get_url=get_url(gw, source), put_url=put_url(gw, source))
    )


@routes.post(
    "/sources",
    summary="Create URLs to upload and download a source",
    response=views.Source,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    user = principal(request).user
    if user.default_team_id is None:
        raise InvalidParams("You have no default team: use POST /apps/{app}/sources.")
    source = await new_source(gw, user.default_team_id, "", user.id)
    return reply(_view(gw, source), 201)


@routes.post(
    "/apps/{app}/sources",
    summary="Create URLs to upload and download a source for an app",
    response=views.Source,
    status=201,
)
async def create_for_app(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "deploy it")
    source = await new_source(gw, app.team_id, app.id, principal(request).user.id)
    return reply(_view(gw, source), 201)


async def _signed_source(request: web.Request, op: str) -> Source:
    ident = request.match_info["source"]
    check_signature(request, op, ident)
    source = await get_source(request.app[GATEWAY].reader, ident)
    if source is None or source.expires_at < time.time():
        raise Gone("This source was deleted: its build finished or it expired.")
    return source


async def read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    too_big = f"The {what} is over the limit of {limit} bytes."
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"The {what} ({request.content_length} bytes) is over the limit of {limit} bytes."
        )
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_big)
        parts.append(chunk)
    return b"".join(parts)


@routes.put(
    "/sources/{source}/blob",
    summary="Upload a source tarball (signed put_url)",
    response=str,
    public=True,
    extension=True,
)
@raw
async def put(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    source = await _signed_source(request, "put")
    data = await read_limited(request, gw.settings.source_max_bytes, "source")
    await put_blob(gw, source, data)
    return web.Response(status=200)


@routes.get(
    "/sources/{source}/blob",
    summary="Download a source tarball (signed get_url)",
    response=str,
    public=True,
    extension=True,
)
@raw
async def get(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    source = await _signed_source(request, "get")
    data = await read_blob(gw, source)
    return web.Response(body=data, content_type="application/gzip")
