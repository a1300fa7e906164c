"""Releases: an image plus a config version plus process types, numbered v1, v2, ...

Every change of what runs makes a release: app creation (v1 "Initial release"),
a config change ("Set FOO config vars"), a build (the builder's
`gateway.release.create` command) and a rollback ("Rollback to v4", the image,
process types and config of v4). A release is `succeeded` when made; the scheduler's
DEPLOY_FINISHED turns it `failed` when its dynos could not start (the release phase
failed, the image could not be pulled, its config could not be decrypted, a new dyno
crashed or never bound $PORT), and the previous release keeps serving. The current
release, marked `current` in every listing and page, is the newest that did not fail:
the one that serves. A later release still builds on the newest one (its image and
process types), failed or not, so a config change can fix what made a deploy fail.

A rollback only reaches what exists. Once the app runs an image, a release made
before its first build (no image, no process types) is refused: taking its empty
process types would empty the formation and stop every dyno. A release whose image
registry-proxy no longer holds (garbage-collected: outside the rollback window,
`SLIPWAY_ROLLBACK_WINDOW`) is refused too: its dynos could never start. Both answer 422
before anything changes, so the app keeps running as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from slipway.contracts.gateway import RELEASE_CREATED, CreateRelease, ReleaseCreated
from slipway.contracts.registry import IMAGES_LIST, ListImages
from slipway.contracts.scheduler import DeployFinished
from slipway.libs.errors import NotFound, Unavailable
from slipway.libs.storage import claim
from slipway.services.gateway.api.formation import check_process_types, desired, sync_formation
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Rollback
from slipway.services.gateway.outbox.changes import Actor, Change, change

log = structlog.get_logger("slipway.gateway.releases")

routes = Routes("releases")


class _Keep:
    """new_release's default: the app's current config version."""


_KEEP = _Keep()


@dataclass(frozen=True)
class Slug:
    """What a release runs: an image and its process types."""

    image_ref: str | None = None
    image_digest: str | None = None
    process_types: dict[str, str] | None = None

    @classmethod
    def of(cls, release: store.Release) -> Slug:
        return cls(release.image_ref, release.image_digest, release.process_types)


async def new_release(
    tx: Change,
    app: store.App,
    *,
    description: str,
    slug: Slug | None = None,
    config_version_id: str | _Keep | None = _KEEP,
    rollback_of: int | None = None,
) -> store.Release:
    """Record the app's next release; `slug` None carries the current one's image forward."""
    current = await store.current_release(tx.conn, app.id)
    if slug is None:
        slug = Slug.of(current) if current else Slug()
    if isinstance(config_version_id, _Keep):
        config_version_id = app.config_version_id
    at = timestamp()
    release = store.Release(
        new_uuid(),
        app.id,
        (current.version if current else 0) + 1,
        description,
        "succeeded",
        slug.image_ref,
        slug.image_digest,
        config_version_id,
        slug.process_types or {},
        tx.actor.user_id,
        tx.actor.email,
        rollback_of,
        at,
        at,
    )
    await store.insert_release(tx.conn, release)
    await store.update_app(tx.conn, app.id, at, released_at=at, config_version_id=config_version_id)
    formation = await sync_formation(tx.conn, app.id, release.process_types)
    tx.emit(
        RELEASE_CREATED,
        ReleaseCreated(
            app_id=app.id,
            app_name=app.name,
            team_id=app.team_id,
            release_id=release.id,
            version=release.version,
            description=description,
            image_ref=release.image_ref,
            image_digest=release.image_digest,
            config_version=config_version_id,
            process_types=release.process_types,
            formation=desired(formation),
            rollback_of=rollback_of,
            actor=tx.actor.email,
        ),
    )
    return release


def registry_digest(release: store.Release) -> str | None:
    """The digest a release's image is pulled by from the registry, or None.

    The builder publishes `<registry>/apps/<app>@<digest>`; an image kept on the engine
    that built it (the builder's "local" mode, one host) has no `@`, and registry-proxy
    neither holds nor collects it.
    """
    if not release.image_ref or "@" not in release.image_ref:
        return None
    return release.image_ref.rsplit("@", 1)[1]


def runs_image(release: store.Release | None) -> bool:
    """Whether `release` runs an image (every release from the app's first build on does)."""
    return release is not None and bool(release.image_ref)


def imageless_refusal(target: store.Release, current: store.Release | None) -> str | None:
    """Why rolling back to `target` would stop a running app, or None."""
    if runs_image(target) or not runs_image(current):
        # An app never built has nothing running: going back among its config-only
        # releases changes config and stops nothing.
        return None
    return (
        f"Cannot roll back to v{target.version}: it was made before the app's first build"
        " and has no image, so rolling back to it would stop every dyno. Roll back to a"
        " release with an image, or deploy again."
    )


async def check_image_kept(gw: Gateway, app: store.App, target: store.Release) -> None:
    """Refuse (422) a rollback to a release whose image registry-proxy no longer holds."""
    digest = registry_digest(target)
    if digest is None:
        return
    try:
        listed = await gw.bus.call(IMAGES_LIST, ListImages(app_id=app.id))
    except Unavailable:
        # 503 rather than a guess either way: neither a refusal nor a rollback that may stop.
        raise Unavailable(
            f"Cannot check that v{target.version}'s image is still in the registry right now;"
            " nothing was changed. Try again shortly."
        ) from None
    if digest in {image.digest for image in listed.images}:
        return
    raise InvalidParams(
        f"Cannot roll back to v{target.version}: its image ({digest[:19]}) is no longer in"
        " the registry, which keeps the images of the app's recent releases only (the"
        " rollback window). Roll back to a newer release, or deploy that code again."
    )


def release_view(
    app: store.App,
    release: store.Release,
    current_version: int,
    *,
    current_runs_image: bool = False,
) -> views.Release:
    image = (
        views.Image(ref=release.image_ref, digest=release.image_digest)
        if release.image_ref and release.image_digest
        else None
    )
    # A release before the first build is no rollback target once an image runs (above);
    # whether an image is still in the registry is only known by asking at rollback time.
    eligible = release.version != current_version and (
        runs_image(release) or not current_runs_image
    )
    return views.Release(
        id=release.id,
        version=release.version,
        description=release.description,
        status=release.status,
        current=release.version == current_version,
        eligible_for_rollback=eligible,
        created_at=release.created_at,
        updated_at=release.updated_at,
        app=views.AppRef(id=app.id, name=app.name),
        user=views.UserRef(id=release.user_id, email=release.user_email),
        # No slug: an OCI image, which Heroku's schema names by a UUID (the digest is in `image`).
        slug=None,
        artifacts=[views.Artifact(type="oci-image", id=views.stable_id("image", image.digest))]
        if image
        else [],
        image=image,
        process_types=release.process_types,
    )


def serving_version(releases: list[store.Release]) -> int:
    """The current release's version: the newest that did not fail (0 when none)."""
    return max((r.version for r in releases if r.status != "failed"), default=0)


@routes.get(
    "/apps/{app}/releases", summary="List releases, oldest first", response=list[views.Release]
)
async def list_releases(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    releases = await store.list_releases(request.app[GATEWAY].reader, app.id)
    newest = releases[-1] if releases else None
    # Decided on the whole list, before the Range middleware cuts a page from it.
    version, with_image = serving_version(releases), runs_image(newest)
    return reply([release_view(app, r, version, current_runs_image=with_image) for r in releases])


async def find_release(conn: store.Conn, app: store.App, ident: str) -> store.Release:
    release = await store.get_release(conn, app.id, ident)
    if release is None:
        raise NotFound(f"Couldn't find that release ({ident[:40]}).")
    return release


@routes.get(
    "/apps/{app}/releases/{release}",
    summary="Info for a release (id or version)",
    response=views.Release,
)
async def info(request: web.Request) -> web.Response:
    reader = request.app[GATEWAY].reader
    app = await app_for(request, Action.READ, "read it")
    release = await find_release(reader, app, request.match_info["release"])
    newest = await store.current_release(reader, app.id)
    version = serving_version(await store.list_releases(reader, app.id))
    return reply(release_view(app, release, version, current_runs_image=runs_image(newest)))


@routes.post(
    "/apps/{app}/releases",
    summary="Roll back to an earlier release",
    body=Rollback,
    response=views.Release,
    status=201,
)
async def rollback(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "roll back the app")
    body = await read_body(request, Rollback)
    gw = request.app[GATEWAY]
    # Asked before the write transaction, so no lock is held across a bus round trip.
    await check_image_kept(gw, app, await find_release(gw.reader, app, body.release))
    async with change(gw, actor(request)) as tx:
        target = await find_release(tx.conn, app, body.release)
        # Checked in the transaction: a deploy committed meanwhile may have changed current.
        refusal = imageless_refusal(target, await store.current_release(tx.conn, app.id))
        if refusal is not None:
            raise InvalidParams(refusal)
        release = await new_release(
            tx,
            app,
            description=f"Rollback to v{target.version}",
            slug=Slug.of(target),
            config_version_id=target.config_version_id,
            rollback_of=target.version,
        )
        tx.audit(
            app.team_id,
            "release.rollback",
            app_name=app.name,
            app_id=app.id,
            details={"to": f"v{target.version}", "version": str(release.version)},
        )
    view = release_view(app, release, release.version, current_runs_image=runs_image(release))
    return reply(view, 201)


async def create_from_build(gw: Gateway, cmd: CreateRelease) -> store.Release | None:
    """Handle the builder's command once: a redelivered command id changes nothing."""
    check_process_types(cmd.process_types)
    user = await store.get_user(gw.reader, cmd.actor)
    who = Actor(email=cmd.actor, user_id=user.id if user else None)
    digest = cmd.image_digest.removeprefix("sha256:")
    async with change(gw, who) as tx:
        if not await claim(tx.conn, cmd.command_id):
            return None
        app = await store.get_app(tx.conn, cmd.app_id)
        if app is None:
            # Deleted while it was building: nothing to release, and nothing to retry.
            log.warning("release.app_gone", app_id=cmd.app_id)
            return None
        release = await new_release(
            tx,
            app,
            description=cmd.description or f"Deploy {digest[:12]}",
            slug=Slug(cmd.image_ref, cmd.image_digest, cmd.process_types),
        )
        details = {"version": str(release.version), "image": cmd.image_digest}
        if cmd.build_id:
            details["build"] = cmd.build_id
        tx.audit(app.team_id, "release.create", app_name=app.name, app_id=app.id, details=details)
    return release


async def deploy_finished(gw: Gateway, event: DeployFinished) -> None:
    """Record, once, that a release's dynos could not start: it is `failed`, not current."""
    if event.status != "failed":
        return
    async with gw.db.transaction() as conn:
        if not await claim(conn, event.event_id):
            return
        await conn.execute(
            "UPDATE releases SET status = 'failed', updated_at = ?"
            " WHERE app_id = ? AND version = ?",
            (timestamp(), event.app_id, event.release_version),
        )
    log.info("release.failed", app=event.app_name, v=event.release_version, why=event.reason)
