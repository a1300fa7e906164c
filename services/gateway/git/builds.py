"""Builds: Heroku's Builds API, and the one place a build is started (API or git push).

    POST   /apps/{app}/builds        {source_blob: {url, checksum, version}, buildpacks: [{url}]}
    GET    /apps/{app}/builds        oldest first
    GET    /apps/{app}/builds/{id}   status, and release {id, version} once it exists
    DELETE /apps/{app}/build-cache   the builder's CACHE_PURGE

A build row and its `BUILD_REQUEST` command commit in one transaction (the
command rides the outbox like an event), so a build is never recorded without
being requested, or requested without a record. The builder answers with
`RELEASE_CREATE` (handled by `releases.create_from_build`, which audits the
build id) and `BUILD_FINISHED` (handled here, idempotent by event id). A
build's release is the one whose `release.create` audit entry names the build:
both commit together, so the link cannot be lost between them.

A source URL is this gateway's signed `get_url` (marked `platform`, fetched by the
builder from the gateway only) or an http(s) URL the egress guard (libs/egress.py)
accepts: no loopback, private, link-local or platform address (422 otherwise).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from slipway.contracts.base import encode
from slipway.contracts.builder import (
    BUILD_REQUEST,
    CACHE_PURGE,
    BuildFinished,
    BuildRequested,
    PurgeCache,
    SourceBlob,
)
from slipway.libs import egress
from slipway.libs.errors import NotFound, Unavailable
from slipway.libs.storage import claim
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.git import sources
from slipway.services.gateway.http import diskpressure, views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.http.urlguard import customer_url_policy
from slipway.services.gateway.outbox.changes import Actor, change

log = structlog.get_logger("slipway.gateway.builds")

routes = Routes("builds")

STACK = "bookworm"
CHECKSUM = re.compile(r"^SHA256:[0-9a-f]{64}\Z")
OUTPUT_URL_TTL = 86400.0


# ---- request bodies -------------------------------------------------------------------------


class SourceBlobBody(Body, frozen=True, kw_only=True):
    url: str
    checksum: str | None = None
    version: str | None = None
    version_description: str | None = None


class BuildpackBody(Body, frozen=True, kw_only=True):
    url: str | None = None
    name: str | None = None


class CreateBuild(Body, frozen=True, kw_only=True):
    source_blob: SourceBlobBody
    buildpacks: list[BuildpackBody] | None = None


# ---- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    id: str
    app_id: str
    status: str
    source_url: str
    source_checksum: str | None
    source_version: str | None
    source_id: str | None
    buildpacks: list[str]
    user_id: str | None
    user_email: str
    release_id: str | None
    error: str | None
    created_at: str
    updated_at: str


def _build(row: Any) -> Build:
    return Build(
        row["id"],
        row["app_id"],
        row["status"],
        row["source_url"],
        row["source_checksum"],
        row["source_version"],
        row["source_id"],
        json.loads(row["buildpacks"]),
        row["user_id"],
        row["user_email"],
        row["release_id"],
        row["error"],
        row["created_at"],
        row["updated_at"],
    )


async def get_build(conn: store.Conn, build_id: str, app_id: str | None = None) -> Build | None:
    """A build by id (within `app_id` when given)."""
    sql, params = "SELECT * FROM builds WHERE id = ?", [build_id]
    if app_id is not None:
        sql, params = sql + " AND app_id = ?", [build_id, app_id]
    async with conn.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return _build(row) if row else None


async def list_builds(conn: store.Conn, app_id: str) -> list[Build]:
    async with conn.execute(
        "SELECT * FROM builds WHERE app_id = ? ORDER BY created_at, rowid", (app_id,)
    ) as cursor:
        return [_build(row) for row in await cursor.fetchall()]


async def release_of(gw: Gateway, build: Build) -> store.Release | None:
    """The release a build made, if any (found by its `release.create` audit entry)."""
    if build.release_id is not None:
        return await store.get_release(gw.reader, build.app_id, build.release_id)
    if build.status == "failed":
        return None
    async with gw.reader.execute(
        "SELECT json_extract(entry, '$.details.version') AS version FROM audit_entries"
        " WHERE app_id = ? AND json_extract(entry, '$.action') = 'release.create'"
        " AND json_extract(entry, '$.details.build') = ?",
        (build.app_id, build.id),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None or row["version"] is None:
        return None
    release = await store.get_release(gw.reader, build.app_id, str(row["version"]))
    if release is not None:
        async with gw.db.transaction() as conn:
            await conn.execute(
                "UPDATE builds SET release_id = ? WHERE id = ?", (release.id, build.id)
            )
    return release


# ---- starting a build -----------------------------------------------------------------------


async def check_source_url(gw: Gateway, url: str) -> None:
    """Refuse a source URL the builder must not be sent to (the builder checks again).

    This gateway's own get_url passes; any other URL passes the egress guard now, so a
    loopback, private or platform address is a 422 here rather than a failed build.
    """
    if sources.source_id_of(gw, url) is not None:
        return
    try:
        await egress.resolve_checked(url, customer_url_policy(gw), schemes=("http", "https"))
    except egress.EgressError as exc:
        raise InvalidParams(f"source_blob.url is refused: {exc.message}") from None


async def start_build(
    gw: Gateway,
    app: store.App,
    who: Actor,
    source: SourceBlob,
    *,
    buildpacks: list[str] | None = None,
    source_id: str | None = None,
    build_id: str | None = None,
) -> Build:
    """Record a pending build and request it from the builders, in one transaction."""
    at = timestamp()
    build = Build(
        build_id or new_uuid(),
        app.id,
        "pending",
        source.url,
        source.checksum,
        source.version,
        source_id,
        buildpacks or [],
        who.user_id,
        who.email,
        None,
        None,
        at,
        at,
    )
    command = BuildRequested(
        build_id=build.id,
        app_id=app.id,
        app_name=app.name,
        team_id=app.team_id,
        source=source,
        buildpacks=build.buildpacks,
        stack=STACK,
        actor=who.email,
    )
    async with change(gw, who) as tx:
        await tx.conn.execute(
            "INSERT INTO builds (id, app_id, status, source_url, source_checksum,"
            " source_version, source_id, buildpacks, user_id, user_email, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                build.id,
                app.id,
                build.status,
                build.source_url,
                build.source_checksum,
                build.source_version,
                source_id,
                json.dumps(build.buildpacks),
                who.user_id,
                who.email,
                at,
                at,
            ),
        )
        # The command rides the outbox: it leaves only if the build row committed.
        await tx.conn.execute(
            "INSERT INTO outbox (event_id, subject, payload, request_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                command.command_id,
                BUILD_REQUEST.subject,
                encode(command),
                who.request_id,
                time.time(),
            ),
        )
        details = {"build": build.id}
        if source.version:
            details["version"] = source.version
        tx.audit(app.team_id, "build.create", app_name=app.name, app_id=app.id, details=details)
    gw.relay.wake()
    log.info("build.requested", build=build.id, app=app.name)
    return build


async def _source_of(
    gw: Gateway, app: store.App, body: SourceBlobBody
) -> tuple[SourceBlob, str | None]:
    await check_source_url(gw, body.url)
    if body.checksum is not None and not CHECKSUM.match(body.checksum):
        raise InvalidParams('source_blob.checksum must read "SHA256:<64 hex digits>".')
    checksum = body.checksum
    source_id = sources.source_id_of(gw, body.url)
    if source_id is not None:
        found = await sources.get_source(gw.reader, source_id)
        if found is None or found.team_id != app.team_id:
            raise InvalidParams("source_blob.url names no source of this app's team.")
        if found.checksum is None:
            raise InvalidParams("Nothing was uploaded to that source yet: PUT the tarball first.")
        if checksum is not None and checksum != found.checksum:
            raise InvalidParams("source_blob.checksum does not match the uploaded tarball.")
        checksum = found.checksum
    # Only this gateway's own signed URL is marked as the platform's: the builder fetches it
    # from the gateway alone; every other URL goes through the builder's egress guard.
    blob = SourceBlob(
        url=body.url, checksum=checksum, version=body.version, platform=source_id is not None
    )
    return blob, source_id


# The builder's own buildpacks (services/builder/buildpacks.py BUILTINS).
BUILTIN_BUILDPACKS = ("python", "nodejs", "static")


def check_buildpack(name: str) -> str:
    """A built-in name or an https URL with a host; 422 for anything the builder must not open.

    `file://` and host paths would read the builder's own disk, `ssh://` and `git@` use
    the platform's keys, plain `http://` can be altered on the way.
    """
    if name in BUILTIN_BUILDPACKS:
        return name
    try:
        parts = urlsplit(name)
        host = parts.hostname
    except ValueError:  # an unclosed IPv6 bracket, say
        host = None
    printable = name.isprintable() and " " not in name
    if printable and host and parts.scheme.lower() == "https" and not parts.username:
        return name
    raise InvalidParams(
        f"Buildpack {name[:100]!r} is not allowed: name a built-in one"
        f" ({', '.join(BUILTIN_BUILDPACKS)}) or an https:// git or tarball URL"
        " (no user or password in it)."
    )


def _buildpack_names(body: CreateBuild) -> list[str]:
    names: list[str] = []
    for buildpack in body.buildpacks or []:
        name = buildpack.url or buildpack.name
        if not name:
            raise InvalidParams("Each buildpack needs a url (or a name).")
        names.append(check_buildpack(name))
    return names


# ---- views ----------------------------------------------------------------------------------


async def build_view(gw: Gateway, build: Build) -> views.Build:
    release = await release_of(gw, build)
    return views.Build(
        id=build.id,
        app=views.AppIdRef(id=build.app_id),
        buildpacks=[views.BuildpackRef(url=name) for name in build.buildpacks],
        created_at=build.created_at,
        updated_at=build.updated_at,
        output_stream_url=output_stream_url(gw, build.id),
        source_blob=views.BuildSourceBlob(
            url=build.source_url, checksum=build.source_checksum, version=build.source_version
        ),
        release=views.ReleaseRef(id=release.id, version=release.version) if release else None,
        stack=STACK,
        status=build.status,
        user=views.UserRef(id=build.user_id, email=build.user_email),
        error=build.error,
    )


def output_stream_url(gw: Gateway, build_id: str) -> str:
    """Where the build's output streams as text, with no token needed (signed, a day)."""
    return sources.signed_url(gw, f"/build-streams/{build_id}", "output", build_id, OUTPUT_URL_TTL)


# ---- endpoints ------------------------------------------------------------------------------


@routes.post(
    "/apps/{app}/builds",
    summary="Create a build",
    body=CreateBuild,
    response=views.Build,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "deploy it")
    body = await read_body(request, CreateBuild)
    diskpressure.refuse_new_work(request, "start a build")
    source, source_id = await _source_of(gw, app, body.source_blob)
    build = await start_build(
        gw, app, actor(request), source, buildpacks=_buildpack_names(body), source_id=source_id
    )
    return reply(await build_view(gw, build), 201)


@routes.get("/apps/{app}/builds", summary="List builds, oldest first", response=list[views.Build])
async def list_all(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "read it")
    return reply([await build_view(gw, b) for b in await list_builds(gw.reader, app.id)])


@routes.get("/apps/{app}/builds/{build}", summary="Info for a build", response=views.Build)
async def info(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "read it")
    build = await get_build(gw.reader, request.match_info["build"], app.id)
    if build is None:
        raise NotFound("Couldn't find that build.")
    return reply(await build_view(gw, build))


@routes.delete(
    "/apps/{app}/build-cache",
    summary="Purge the app's build cache",
    response=dict[str, str],
    status=202,
)
async def purge_cache(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "purge its build cache")
    # Each builder purges the cache its own engine holds.
    purged = await gw.bus.gather(
        CACHE_PURGE, PurgeCache(app_id=app.id, team_id=app.team_id), timeout=30.0
    )
    if purged.errors:
        raise next(iter(purged.errors.values()))
    if not purged.replies:
        raise Unavailable("No builder is running to purge the build cache. Retry later.")
    async with change(gw, actor(request)) as tx:
        tx.audit(app.team_id, "build-cache.purge", app_name=app.name, app_id=app.id)
    return reply({}, 202)


# ---- the builder's outcome ------------------------------------------------------------------


async def finished(gw: Gateway, event: BuildFinished) -> None:
    """Record a build's outcome once, then drop its source."""
    async with gw.db.transaction() as conn:
        if not await claim(conn, event.event_id):
            return
        build = await get_build(conn, event.build_id)
        if build is None:
            log.warning("build.unknown_finished", build=event.build_id)
            return
        await conn.execute(
            "UPDATE builds SET status = ?, error = ?, updated_at = ?"
            " WHERE id = ? AND status = 'pending'",
            (event.status, event.error, timestamp(), build.id),
        )
    if build.source_id is not None:
        await sources.delete_source(gw, build.source_id)
    log.info("build.finished", build=build.id, status=event.status)
