"""The pure parts of garbage collection: which digests go, and the push gate."""

from __future__ import annotations

import asyncio

from slipway.services.registry_proxy.gate import PushGate
from slipway.services.registry_proxy.gc import doomed
from slipway.services.registry_proxy.store import Image, Release

DAY = 86400.0


def _images(*digests: str, pushed_at: float = 0.0) -> list[Image]:
    return [Image("app", d, f"t-{d}", pushed_at) for d in digests]


def _releases(*digests: str | None) -> list[Release]:
    return [Release(f"r{v}", "app", v, d) for v, d in enumerate(digests, start=1)]


def test_the_last_n_releases_keep_their_images() -> None:
    """Seven releases, keep five: the first two releases' images go."""
    releases = _releases("a", "b", "c", "d", "e", "f", "g")
    images = _images("a", "b", "c", "d", "e", "f", "g")
    assert doomed(images, releases, keep=5, now=10.0, grace=DAY) == {"a", "b"}


def test_an_image_a_recent_release_reuses_is_kept() -> None:
    """A config change or rollback re-using an old digest keeps that image."""
    releases = _releases("a", "b", "c", "a")
    assert doomed(_images("a", "b", "c"), releases, keep=2, now=10.0, grace=DAY) == {"b"}


def test_unreleased_images_wait_out_the_grace_period() -> None:
    """A fresh image no release names yet stays; an abandoned old one goes."""
    releases = _releases("a")
    fresh = _images("new", pushed_at=5 * DAY)
    stale = _images("old", pushed_at=1 * DAY)
    plan = doomed(fresh + stale + _images("a"), releases, keep=1, now=5 * DAY + 10, grace=DAY)
    assert plan == {"old"}


def test_releases_without_images_count_but_keep_nothing() -> None:
    """A release with no image still takes a place among the last N."""
    releases = _releases("a", "b", None)
    assert doomed(_images("a", "b"), releases, keep=2, now=10.0, grace=DAY) == {"a"}


async def test_collection_waits_for_open_sessions_and_holds_new_ones() -> None:
    """The collector waits for a push in progress; a new push waits for the collector."""
    gate = PushGate(idle_s=60, wait_s=60)
    order: list[str] = []
    async with gate.request("push-1"):
        pass  # push-1 is now open: blobs uploaded, manifest still to come

    async def collect() -> None:
        async with gate.exclusive():
            order.append("collect")

    async def new_push() -> None:
        async with gate.request("push-2"):
            order.append("push-2")

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)
    assert gate.closed
    newcomer = asyncio.create_task(new_push())
    async with gate.request("push-1"):  # an open session goes on while the gate is closed
        order.append("push-1")
    await gate.finish("push-1")
    await asyncio.wait_for(asyncio.gather(collector, newcomer), 5)
    assert order == ["push-1", "collect", "push-2"]
    assert not gate.closed


async def test_an_abandoned_session_stops_blocking_after_its_idle_time() -> None:
    """A push that never sends its manifest does not hold collections off forever."""
    gate = PushGate(idle_s=0.2, wait_s=60)
    async with gate.request("abandoned"):
        pass
    async with asyncio.timeout(5):
        async with gate.exclusive():
            assert gate.sessions == 0
