"""Which gateway instance serves: `GET /healthz` on the leader, and the standby's answer.

The gateway runs one active instance (contracts/leases.py); others stand by on the same
port until they hold the lease. A load balancer in front of them (compose/ puts HAProxy
there) checks `/healthz`: 200 from the leader, 503 from a standby, so requests reach the
instance that owns the store. A request that reaches a standby anyway is refused with a
503 and `Retry-After`, in Heroku's error body, and never touches the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import msgspec
from aiohttp import web

from slipway.libs.service import ServiceApp
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.errors import ErrorBody
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("meta")

# Seconds a client is told to wait: a standby takes over within the lease ttl.
RETRY_AFTER = "1"


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """What `/healthz` says: this instance's role and name."""

    role: Literal["leader", "standby"]
    instance: str


@routes.get(
    "/healthz",
    summary="Whether this gateway instance leads (200) or stands by (503)",
    response=Health,
    public=True,
    extension=True,
)
async def healthz(request: web.Request) -> web.Response:
    return reply(Health(role="leader", instance=request.app[GATEWAY].bus.instance))


def standby_app(instance: str) -> web.Application:
    """What a standby serves on the API port: 503 for everything, `/healthz` included."""
    health = msgspec.json.encode(Health(role="standby", instance=instance))
    refusal = msgspec.json.encode(
        ErrorBody(
            id="unavailable",
            message="This gateway instance is standing by for the leader. Retry in a moment.",
        )
    )

    async def answer(request: web.Request) -> web.Response:
        body = health if request.path == "/healthz" else refusal
        return web.Response(
            status=503,
            body=body,
            content_type="application/json",
            headers={"Retry-After": RETRY_AFTER},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def serve_standby(service: ServiceApp, settings: GatewaySettings) -> AsyncIterator[None]:
    """The standby's server on the API port, closed before the leader's binds it."""
    runner = web.AppRunner(standby_app(service.bus.instance), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api_host, settings.api_port).start()
    try:
        yield
    finally:
        await runner.cleanup()
