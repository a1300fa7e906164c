"""The builder process: the engine, the database, and the handlers that use them.

BUILD_REQUEST     (command, CMD work queue)  run a build; several builders share the queue
BUILD_OUTPUT_GET  (rpc)  a build's whole output, live or stored (decrypted on demand)
CACHE_PURGE       (rpc)  drop an app's build cache volume
gateway.APP_DESTROYED (event)  cancel the app's builds, remove its cache, images and records
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import aiodocker
import structlog

from slipway.contracts import gateway as gw
from slipway.contracts.base import Ok
from slipway.contracts.builder import (
    BUILD_OUTPUT_GET,
    BUILD_REQUEST,
    CACHE_PURGE,
    BuildOutputText,
    BuildRequested,
    BuildStatus,
    GetBuildOutput,
    PurgeCache,
)
from slipway.contracts.keyring import Purpose
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.bus import context
from slipway.libs.crypto import envelope
from slipway.libs.egress import policy_for
from slipway.libs.errors import NotFound
from slipway.libs.service import Key, ServiceApp
from slipway.services.builder import snapshot
from slipway.services.builder.appdata import destroy_app, purge_cache
from slipway.services.builder.build import Builder, output_binding
from slipway.services.builder.buildmetrics import BuildMetrics
from slipway.services.builder.container import ensure_network, remove_leftovers
from slipway.services.builder.dockerfile.steps import remove_build_images
from slipway.services.builder.firewall import BuildFirewall
from slipway.services.builder.settings import BuilderSettings
from slipway.services.builder.store import BuildStore

log = structlog.get_logger("slipway.builder")

BUILDER = Key("builder", Builder)


def events_purpose(settings: BuilderSettings) -> str:
    """The builder's durable consumer of the gateway's events.

    Each builder has its own engine and database, so each needs every APP_DESTROYED:
    builders given a stable SLIPWAY_INSTANCE get a consumer each.
    """
    return "apps" if settings.instance is None else f"apps-{settings.instance}"


def create_service(settings: BuilderSettings) -> ServiceApp:
    """The builder as a runnable service."""
    service = ServiceApp(
        Service.BUILDER,
        settings=settings,
        description="Slipway's builder: buildpacks or a Dockerfile to an image, then a release",
    )
    # Builds are long: a few at a time per builder, the rest wait in the queue.
    service.command_options = {"concurrency": settings.concurrency}

    @service.cleanup_ctx
    async def engine(service: ServiceApp) -> AsyncIterator[None]:
        docker = aiodocker.Docker(url=settings.docker_url)
        store = await BuildStore.open(settings.db_path())
        try:
            await _recover(docker, store, settings)
            await ensure_network(docker, settings.build_network)
            if settings.build_firewall:
                policy = policy_for(settings.egress_allow, settings.egress_deny)
                await BuildFirewall(settings.build_network, policy).apply(docker)
            service[BUILDER] = Builder(
                settings, service.bus, docker, store, destroyed=await store.destroyed()
            )
            if service.metrics.enabled:
                service[BUILDER].metrics = BuildMetrics(service.metrics.registry)
            yield
        finally:
            await store.close()
            await docker.close()

    @service.command(BUILD_REQUEST)
    async def build(cmd: BuildRequested) -> None:
        await service[BUILDER].handle(cmd)

    @service.rpc(BUILD_OUTPUT_GET)
    async def output(req: GetBuildOutput) -> BuildOutputText:
        context.require_caller(BUILD_OUTPUT_GET)
        return await build_output(service[BUILDER], req.build_id)

    @service.rpc(CACHE_PURGE)
    async def purge(req: PurgeCache) -> Ok:
        context.require_caller(CACHE_PURGE)
        await purge_cache(service[BUILDER], req.app_id)
        return Ok()

    @service.event(events_purpose(settings), gw.APP_DESTROYED)
    async def app_destroyed(event: gw.AppDestroyed) -> None:
        await destroy_app(service[BUILDER], event.app_id)

    service.snapshot_sources = snapshot.sources(settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "builder"), docker=True)
    return service


async def _recover(docker: aiodocker.Docker, store: BuildStore, settings: BuilderSettings) -> None:
    # Builds this builder was running when it stopped will be redelivered and run again:
    # their containers and scratch folders are stale. Old finished builds are forgotten.
    pending = await store.pending()
    removed = await remove_leftovers(docker, pending)
    removed += await remove_build_images(docker, pending)
    await asyncio.to_thread(shutil.rmtree, settings.builds_dir(), True)
    pruned = await store.prune(settings.keep_builds_days * 86400)
    if removed or pruned:
        log.info("builder.recovered", leftovers_removed=removed, builds_pruned=pruned)


async def build_output(builder: Builder, build_id: str) -> BuildOutputText:
    """The whole output of a build this builder ran: live if running, else decrypted."""
    live = builder.running.get(build_id)
    if live is not None:
        return BuildOutputText(build_id=build_id, text=live.text, finished=False, status="pending")
    record = await builder.store.get(build_id)
    if record is None:
        raise NotFound(f"no build {build_id} on this builder")
    text = ""
    if record.output is not None:
        plain = await envelope.decrypt(
            builder.bus, record.team_id, Purpose.BUILD_SOURCE, output_binding(record), record.output
        )
        text = plain.decode()
    status: BuildStatus = "succeeded" if record.status == "succeeded" else "failed"
    return BuildOutputText(
        build_id=build_id,
        text=text,
        finished=record.finished,
        status=status if record.finished else "pending",
    )
