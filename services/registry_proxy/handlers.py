"""registry-proxy's RPCs and event handlers: policy check, then the domain objects."""

from __future__ import annotations

import time

from slipway.contracts import gateway, registry
from slipway.contracts.gateway import AppDestroyed, ReleaseCreated
from slipway.contracts.registry import (
    Credentials,
    ImageInfo,
    ImageList,
    IssueCredentials,
    ListImages,
)
from slipway.libs.bus import context
from slipway.libs.errors import InvalidRequest
from slipway.libs.service import ServiceApp
from slipway.services.registry_proxy import credentials, policy
from slipway.services.registry_proxy.proxy import repository_name, valid_app_id
from slipway.services.registry_proxy.state import STATE
from slipway.services.registry_proxy.store import Release

GC_CONSUMER = "gc"


def _caller() -> str | None:
    ctx = context.current()
    return ctx.caller if ctx else None


def _app_id(app_id: str) -> str:
    if not valid_app_id(app_id):
        raise InvalidRequest(
            f"{app_id!r} cannot name a repository: lowercase letters, digits, '.', '_', '-'"
        )
    return app_id


def release_digest(event: ReleaseCreated) -> str | None:
    """The digest a release runs: its image_digest, or the `@digest` of its image_ref."""
    if event.image_digest:
        return event.image_digest
    if event.image_ref and "@" in event.image_ref:
        return event.image_ref.rsplit("@", 1)[1]
    return None


def register(service: ServiceApp) -> None:
    """Attach every handler to `service`."""

    @service.rpc(registry.CREDENTIALS_ISSUE)
    async def issue(req: IssueCredentials) -> Credentials:
        policy.check(_caller(), policy.Operation(req.access))
        state = service[STATE]
        settings = state.settings
        app_id = _app_id(req.app_id)
        ttl = req.ttl_s if req.ttl_s > 0 else settings.registry_credential_ttl_s
        ttl = min(ttl, settings.registry_credential_max_ttl_s)
        now = time.time()
        token = state.issuer.issue(app_id, req.access, ttl, now=now)
        return Credentials(
            registry=state.proxy.registry,
            repository=f"{state.proxy.registry}/{repository_name(app_id)}",
            username=credentials.username(app_id, req.access),
            password=token,
            expires_at=float(int(now) + ttl),
        )

    @service.rpc(registry.IMAGES_LIST)
    async def list_images(req: ListImages) -> ImageList:
        policy.check(_caller(), policy.Operation.LIST)
        state = service[STATE]
        app_id = _app_id(req.app_id)
        images = await state.store.images(app_id)
        return ImageList(
            app_id=app_id,
            repository=f"{state.proxy.registry}/{repository_name(app_id)}",
            images=[ImageInfo(tag=i.tag, digest=i.digest, pushed_at=i.pushed_at) for i in images],
        )

    @service.event(GC_CONSUMER, gateway.RELEASE_CREATED)
    async def on_release(event: ReleaseCreated) -> None:
        # Idempotent by release id; pruning again finds nothing left to delete.
        state = service[STATE]
        release = Release(event.release_id, event.app_id, event.version, release_digest(event))
        await state.store.record_release(release)
        await state.collector.prune(event.app_id)

    @service.event(GC_CONSUMER, gateway.APP_DESTROYED)
    async def on_app_destroyed(event: AppDestroyed) -> None:
        await service[STATE].collector.prune(event.app_id, everything=True)
