"""Build sources: gzipped tarballs uploaded for a build, stored encrypted, fetched by the builder.

    POST /sources                      → {source_blob: {put_url, get_url}}
    PUT  <put_url>   (the tarball)     → 200
    GET  <get_url>   (the builder)     → the tarball

As with Heroku's presigned URLs, `put_url` and `get_url` carry their own
authority: an HMAC-SHA256 signature over the operation, the source id and an
expiry, under a key kept in `<SLIPWAY_HOME>/gateway/url-signing.key` (0600).
The builder fetches from loopback with no user token.

A source is streamed, never held whole in memory: the upload (or a push's
archive) is encrypted chunk by chunk (libs/crypto/stream.py, under a fresh data
key of purpose `build-source`) into `<SLIPWAY_HOME>/gateway/sources/<id>.enc`
(0600), and served back the same way. The file is

    format 0x05 (1) | KEK version (4) | length w (2) | wrapped data key (w) | the stream

bound to team, app, kind "build-source" and the source id, so a file moved to
another source or team does not decrypt. An upload past `source_max_bytes` is
refused (413) as soon as it passes the limit, and its partial file removed. A
user holds at most `source_pending_max` sources not yet used or expired (429
beyond). A source is deleted when the build using it finishes, or after
`source_ttl` seconds, whichever comes first.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import struct
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlencode

import structlog
from aiohttp import web

from slipway.contracts.keyring import Purpose
from slipway.libs.crypto import Binding, DecryptionFailed, envelope
from slipway.libs.crypto.stream import StreamDecryptor, StreamEncryptor
from slipway.libs.errors import Forbidden, Gone, NotFound
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.git.passthrough import raw
from slipway.services.gateway.http import diskpressure, views
from slipway.services.gateway.http.auth import Action, app_for, principal
from slipway.services.gateway.http.errors import (
    ApiError,
    DataIntegrity,
    InvalidParams,
    PayloadTooLarge,
)
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.outbox.sweeper import Sweeper

log = structlog.get_logger("slipway.gateway.sources")

routes = Routes("sources")

KIND = "build-source"
_CHUNK = 256 * 1024
FORMAT_SOURCE_STREAM = 0x05
_HEAD = struct.Struct(">BIH")


class TooManySources(ApiError):
    """The user already holds as many pending sources as allowed."""

    status: ClassVar[int] = 429
    heroku_id: ClassVar[str] = "rate_limit"


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
    """Record an empty source that expires after `source_ttl`; 429 past the user's limit."""
    source = Source(
        new_uuid(), team_id, app_id, user_id, None, None, time.time() + gw.settings.source_ttl
    )
    async with gw.db.transaction() as conn:
        await _check_pending(gw, conn, user_id)
        await conn.execute(
            "INSERT INTO sources (id, team_id, app_id, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (source.id, team_id, app_id, user_id, timestamp(), source.expires_at),
        )
    return source


async def _check_pending(gw: Gateway, conn: store.Conn, user_id: str) -> None:
    # Counted inside the insert's transaction: parallel requests cannot all pass the check.
    limit = gw.settings.source_pending_max
    async with conn.execute(
        "SELECT COUNT(*) FROM sources WHERE user_id = ? AND expires_at >= ?",
        (user_id, time.time()),
    ) as cursor:
        row = await cursor.fetchone()
    if row is not None and row[0] >= limit:
        raise TooManySources(
            f"You already have {row[0]} sources waiting for a build (the limit is {limit}):"
            " build from them, or wait until they expire, before creating more."
        )


def checksum_of(data: bytes) -> str:
    """Heroku's spelling of a tarball's checksum."""
    return "SHA256:" + hashlib.sha256(data).hexdigest()


async def put_stream(
    gw: Gateway, source: Source, chunks: AsyncIterable[bytes], limit: int, what: str = "source"
) -> str:
    """Encrypt `chunks` into the file of `source` as they come; its checksum.

    PayloadTooLarge as soon as more than `limit` bytes came; the partial file is removed.
    """
    key = await envelope.generate_data_key(
        gw.bus, source.team_id, Purpose.BUILD_SOURCE, binding(source)
    )
    encryptor = StreamEncryptor(key.plaintext, binding(source), key_version=key.kek_version)
    path = source_path(gw, source.id)
    # Its own partial file: two PUTs to one put_url at once never write into each other.
    partial = path.with_name(f"{source.id}.{secrets.token_hex(6)}.part")
    digest = hashlib.sha256()
    size = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_HEAD.pack(FORMAT_SOURCE_STREAM, key.kek_version, len(key.wrapped)))
            out.write(key.wrapped)
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The {what} is over the limit of {limit} bytes.")
                digest.update(chunk)
                out.write(encryptor.update(chunk))
            out.write(encryptor.finalize())
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    checksum = "SHA256:" + digest.hexdigest()
    async with gw.db.transaction() as conn:
        await conn.execute(
            "UPDATE sources SET size = ?, checksum = ?, uploaded_at = ? WHERE id = ?",
            (size, checksum, timestamp(), source.id),
        )
    return checksum


async def put_blob(gw: Gateway, source: Source, data: bytes) -> str:
    """Encrypt and store the tarball of `source` (already in memory); returns its checksum."""
    return await put_stream(gw, source, _once(data), len(data))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def iter_blob(gw: Gateway, source: Source) -> AsyncIterator[bytes]:
    """The plaintext tarball of `source`, chunk by chunk as each one authenticates.

    The last chunk proves the whole: a DataIntegrity raised at the end means the bytes
    already handed out must be thrown away (the builder checks the checksum anyway).
    """
    try:
        sealed = source_path(gw, source.id).open("rb")
    except FileNotFoundError:
        raise NotFound("Nothing was uploaded to this source.") from None
    with sealed:
        head = sealed.read(_HEAD.size)
        if head[:1] == bytes([envelope.FORMAT_RECORD_V1]):
            # Uploaded by an older gateway, as one record (at most source_max_bytes).
            yield await _legacy_blob(gw, source, head + sealed.read())
            return
        if len(head) < _HEAD.size or head[0] != FORMAT_SOURCE_STREAM:
            raise _integrity_failed(source)
        _, _, length = _HEAD.unpack(head)
        try:
            key = await envelope.unwrap_data_key(
                gw.bus, source.team_id, Purpose.BUILD_SOURCE, binding(source), sealed.read(length)
            )
            decryptor = StreamDecryptor(key, binding(source))
            while chunk := sealed.read(_CHUNK):
                if plain := decryptor.update(chunk):
                    yield plain
            if last := decryptor.finalize():
                yield last
        except DecryptionFailed:
            raise _integrity_failed(source) from None


async def _legacy_blob(gw: Gateway, source: Source, sealed: bytes) -> bytes:
    try:
        return await envelope.decrypt(
            gw.bus, source.team_id, Purpose.BUILD_SOURCE, binding(source), sealed
        )
    except DecryptionFailed:
        raise _integrity_failed(source) from None


def _integrity_failed(source: Source) -> DataIntegrity:
    log.error("source.integrity_failed", source=source.id)
    return DataIntegrity("The stored source failed its integrity check.")


async def read_blob(gw: Gateway, source: Source) -> bytes:
    """The plaintext tarball of `source`, whole (small sources and tests only)."""
    return b"".join([chunk async for chunk in iter_blob(gw, source)])


async def delete_source(gw: Gateway, source_id: str) -> None:
    """Forget a source: its file first, then its row (a crash between leaves a row to sweep)."""
    path = source_path(gw, source_id)
    path.unlink(missing_ok=True)
    for partial in path.parent.glob(f"{source_id}.*part"):
        partial.unlink(missing_ok=True)
    async with gw.db.transaction() as conn:
        await conn.execute("DELETE FROM sources WHERE id = ?", (source_id,))


async def store_tarball(
    gw: Gateway, app: store.App, user_id: str, data: bytes
) -> tuple[Source, str, str]:
    """A new source holding `data` for `app`: the source, its get_url and its checksum."""
    return await store_stream(gw, app, user_id, _once(data), len(data))


async def store_stream(
    gw: Gateway, app: store.App, user_id: str, chunks: AsyncIterable[bytes], limit: int
) -> tuple[Source, str, str]:
    """A new source streamed from `chunks` for `app`: the source, its get_url, its checksum."""
    source = await new_source(gw, app.team_id, app.id, user_id)
    try:
        checksum = await put_stream(gw, source, chunks, limit)
    except BaseException:
        await delete_source(gw, source.id)
        raise
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
    diskpressure.refuse_new_work(request, "store a new source")
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
    diskpressure.refuse_new_work(request, "store a new source")
    source = await new_source(gw, app.team_id, app.id, principal(request).user.id)
    return reply(_view(gw, source), 201)


async def _signed_source(request: web.Request, op: str) -> Source:
    ident = request.match_info["source"]
    check_signature(request, op, ident)
    source = await get_source(request.app[GATEWAY].reader, ident)
    if source is None or source.expires_at < time.time():
        raise Gone("This source was deleted: its build finished or it expired.")
    return source


def check_length(request: web.Request, limit: int, what: str) -> None:
    """413 at once when the declared Content-Length is over `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"The {what} ({request.content_length} bytes) is over the limit of {limit} bytes."
        )


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (aiohttp pauses the socket while we do not read)."""
    while chunk := await request.content.read(_CHUNK):
        yield chunk


async def read_limited(request: web.Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    check_length(request, limit, what)
    parts: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The {what} is over the limit of {limit} bytes.")
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
    limit = gw.settings.source_max_bytes
    check_length(request, limit, "source")
    await put_stream(gw, source, body_chunks(request), limit)
    return web.Response(status=200)


@routes.get(
    "/sources/{source}/blob",
    summary="Download a source tarball (signed get_url)",
    response=str,
    public=True,
    extension=True,
)
@raw
async def get(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    source = await _signed_source(request, "get")
    chunks = iter_blob(gw, source)
    first = await anext(chunks, b"")  # a missing or unreadable file still gets its 404/500
    response = web.StreamResponse(headers={"Content-Type": "application/gzip"})
    await response.prepare(request)
    await response.write(first)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except DataIntegrity:
        # Bytes already went out: cut the connection so the reader cannot take them as whole.
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
