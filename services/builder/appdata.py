"""What the builder holds of one app, and how it goes: a cache purge, or the app destroyed.

On `gateway.APP_DESTROYED` the builder removes, from its engine and its database:

1. nothing new: the app gets a tombstone first, so a build command for it that is
   still queued (or redelivered) is refused instead of recreating what follows;
2. its builds in progress: cancelled (Heroku cancels an app's build when the app is
   destroyed); each ends `failed` saying why, after its container and scratch
   folder are removed;
3. its build cache volume `slipway-build-cache-<app id>`;
4. its images: `slipway/app-<app id>:*`, `<registry>/apps/<app id>:*` and any untagged
   image labelled `slipway.app=<app id>` (`libs.appimages`: exact names only);
5. its build records and their sealed output (secure delete, WAL truncated).

Every step finds its own leftovers and tolerates their absence, so a redelivered
event after a partial clean-up finishes the job. A step that cannot finish (the
volume or an image still in use by a container) raises `Conflict` after the other
steps ran: the event is retried with backoff.
"""

from __future__ import annotations

import aiodocker
import structlog

from slipway.libs.appimages import remove_app_images
from slipway.libs.errors import Conflict
from slipway.services.builder.build import Builder
from slipway.services.builder.container import cache_volume_name

log = structlog.get_logger("slipway.builder")


async def purge_cache(builder: Builder, app_id: str) -> bool:
    """Remove the app's cache volume (the next build starts cold); False if there was none."""
    try:
        # aiodocker's volume API carries no annotations.
        volume = await builder.docker.volumes.get(cache_volume_name(app_id))  # type: ignore[no-untyped-call]
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise
    try:
        await volume.delete()
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False  # removed meanwhile
        if exc.status == 409:
            raise Conflict("a build of this app is using its cache; purge after it ends") from None
        raise
    log.info("builder.cache_purged", app_id=app_id)
    return True


async def destroy_app(builder: Builder, app_id: str) -> None:
    """Remove everything of a destroyed app from this builder (see the module doc)."""
    builder.destroyed.add(app_id)  # before any await: a build starting now sees it
    await builder.store.mark_destroyed(app_id)
    cancelled = await builder.cancel_builds(app_id)
    problems: list[str] = []
    try:
        cache = await purge_cache(builder, app_id)
    except Conflict as exc:
        cache = False
        problems.append(exc.message)
    images = await remove_app_images(builder.docker, app_id)
    if images.in_use:
        problems.append(f"images still used by a container: {', '.join(images.in_use)}")
    builds = await builder.store.forget_app(app_id)
    log.info(
        "builder.app_destroyed",
        app_id=app_id,
        builds_cancelled=cancelled,
        cache_removed=cache,
        images_removed=len(images.removed),
        builds_forgotten=builds,
    )
    if problems:
        raise Conflict(f"app {app_id} is not fully removed yet: {'; '.join(problems)}")
