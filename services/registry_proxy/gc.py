"""Image garbage collection: keep what the rollback window of each app runs, free the rest.

The rollback window is the app's last N releases (`SLIPWAY_ROLLBACK_WINDOW`, 10): every
image one of them runs is kept, so `releases:rollback` to any of them finds its image,
and the current (newest) release's image is kept whatever N is. An image only older
releases ran is deleted; a rollback to one of those is refused by the gateway, which
asks `images.list` first.

Two steps, as Distribution wants them:

1. Pruning, after each RELEASE_CREATED (or APP_DESTROYED) event: `doomed()` decides
   which digests of the app to drop, and their manifests are deleted through the
   registry API (which also removes the tags pointing at them). Cheap, done at once.
2. Collecting, `registry_gc_delay_s` later (so a burst of releases costs one run): blobs no
   manifest references any more are deleted by `docker-registry garbage-collect`.

Collecting is only safe while nothing is being pushed (a layer uploaded before its
manifest is referenced by nothing yet). The collector therefore (a) closes the
push gate to new push sessions and waits for open ones to finish (gate.py), then
(b) restarts Distribution in read-only mode, so that even a request that slipped
past could not write, (c) collects, and (d) restarts it read-write and reopens the
gate. Pulls keep working throughout, apart from the two restarts, during which
the proxy holds requests until Distribution answers again. A collection owed when
the service stopped is run after the next start (the debt is in the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import aiohttp
import structlog

from slipway.services.registry_proxy.distribution import BASE_URL, Distribution
from slipway.services.registry_proxy.errors import DistributionError
from slipway.services.registry_proxy.gate import PushGate
from slipway.services.registry_proxy.proxy import repository_name
from slipway.services.registry_proxy.store import Image, Release, Store

log = structlog.get_logger("slipway.registry_proxy.gc")


def doomed(
    images: Iterable[Image],
    releases: Iterable[Release],
    *,
    keep: int,
    now: float,
    grace: float,
) -> set[str]:
    """The digests to delete: released once but by none of the last `keep` releases (the
    rollback window), or never released and older than `grace` seconds (an abandoned build).
    """
    newest_first = sorted(releases, key=lambda r: r.version, reverse=True)
    # The current release always runs: a window of 0 would stop the app at its next pull.
    window = newest_first[: max(keep, 1)]
    kept = {r.image_digest for r in window if r.image_digest}
    released = {r.image_digest for r in newest_first if r.image_digest}
    last_push: dict[str, float] = {}
    for image in images:
        last_push[image.digest] = max(last_push.get(image.digest, 0.0), image.pushed_at)
    return {
        digest
        for digest, pushed_at in last_push.items()
        if digest not in kept and (digest in released or pushed_at < now - grace)
    }


class Collector:
    """Prunes apps' old images and runs Distribution's garbage collection safely."""

    def __init__(
        self,
        store: Store,
        distribution: Distribution,
        gate: PushGate,
        *,
        keep: int,
        grace: float,
        delay: float,
    ) -> None:
        self.store = store
        self.distribution = distribution
        self.gate = gate
        self.keep = keep
        self.grace = grace
        self.delay = delay
        self.collections = 0
        self._owed = asyncio.Event()
        # Pruning deletes through the API, which a read-only Distribution refuses.
        self._maintenance = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def holding_off(self) -> asyncio.Lock:
        """The lock pruning and collecting hold: while it is held, nothing is deleted."""
        return self._maintenance

    async def start(self) -> None:
        """Start the background collector; collect at once if a collection is owed."""
        self._session = aiohttp.ClientSession(connector=self.distribution.connector())
        if await self.store.gc_owed() is not None:
            self._owed.set()
        self._task = asyncio.create_task(self._run(), name="registry-gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def prune(self, app_id: str, *, everything: bool = False) -> set[str]:
        """Delete the manifests of `app_id`'s images that are no longer kept."""
        images = await self.store.images(app_id)
        if everything:
            digests = {image.digest for image in images}
        else:
            releases = await self.store.releases(app_id)
            digests = doomed(images, releases, keep=self.keep, now=time.time(), grace=self.grace)
        if not digests:
            return digests
        async with self._maintenance:
            for digest in sorted(digests):
                await self._delete_manifest(app_id, digest)
            await self.store.mark_deleted(app_id, sorted(digests))
        log.info("registry.pruned", app_id=app_id, digests=sorted(digests))
        self._owed.set()
        return digests

    async def collect(self) -> str:
        """Run one garbage collection now, with pushes held off and Distribution read-only."""
        owed = await self.store.gc_owed()
        async with self._maintenance, self.gate.exclusive():
            await self.distribution.restart(read_only=True)
            try:
                output = await self.distribution.garbage_collect()
            finally:
                await self.distribution.restart(read_only=False)
        if owed is not None:
            await self.store.gc_done(owed)
        self.collections += 1
        log.info("registry.collected", summary=output.strip().splitlines()[-1:])
        return output

    async def _delete_manifest(self, app_id: str, digest: str) -> None:
        assert self._session is not None
        await self.distribution.wait_ready(60)
        url = f"{BASE_URL}/v2/{repository_name(app_id)}/manifests/{digest}"
        async with self._session.delete(url) as resp:
            # 404: already deleted (a redelivered event, or a crash after the delete).
            if resp.status not in (202, 404):
                body = await resp.text()
                raise DistributionError(f"deleting {digest} failed: {resp.status} {body[:300]}")

    async def _run(self) -> None:
        while True:
            await self._owed.wait()
            await asyncio.sleep(self.delay)
            self._owed.clear()
            try:
                await self.collect()
            except DistributionError as exc:
                log.error("registry.collect_failed", error=exc.message)
                self._owed.set()
                await asyncio.sleep(max(self.delay, 5.0))
            except Exception:
                # Never let the collector die quietly: the debt stays in the database.
                log.exception("registry.collect_crashed")
                self._owed.set()
                await asyncio.sleep(max(self.delay, 5.0))
