"""Docker hosts (platform admins only): add, list, drain, remove — a Slipway extension.

The scheduler keeps the host registry; these endpoints forward to its RPCs and
log each change (a host is the platform's, not a team's). A tcp:// engine names TLS files on the
scheduler's machine, never the key material itself.
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from slipway.contracts import scheduler as sc
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import actor, require_admin
from slipway.services.gateway.http.routing import Routes, read_body, reply

routes = Routes("host")
log = structlog.get_logger("slipway.gateway.hosts")


class CreateHost(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    endpoint: str
    address: str = "127.0.0.1"
    memory_mb: int | None = None
    max_dynos: int | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


class RemoveHost(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    force: bool = False


def _audit(request: web.Request, what: str, host: sc.HostInfo) -> None:
    # Team audit chains hold team actions; a host is the platform's, so it is logged.
    log.info(what, host=host.id, endpoint=host.endpoint, actor=str(actor(request)))


@routes.post(
    "/hosts",
    summary="Add a Docker host",
    body=CreateHost,
    response=sc.HostInfo,
    status=201,
    extension=True,
)
async def add(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, CreateHost)
    answer = await request.app[GATEWAY].bus.call(
        sc.HOSTS_ADD, sc.AddHost(**msgspec.structs.asdict(body)), timeout=15.0
    )
    _audit(request, "host.add", answer.host)
    return reply(answer.host, status=201)


@routes.get("/hosts", summary="List Docker hosts", response=list[sc.HostInfo], extension=True)
async def list_hosts(request: web.Request) -> web.Response:
    require_admin(request)
    answer = await request.app[GATEWAY].bus.call(sc.HOSTS_LIST, sc.ListHosts())
    return reply(answer.hosts)


@routes.post(
    "/hosts/{host}/actions/drain",
    summary="Drain a host: its dynos move, it takes no new ones",
    response=sc.HostInfo,
    extension=True,
)
async def drain(request: web.Request) -> web.Response:
    require_admin(request)
    host_id = request.match_info["host"]
    answer = await request.app[GATEWAY].bus.call(
        sc.HOSTS_DRAIN, sc.HostRef(id=host_id), timeout=30.0
    )
    _audit(request, "host.drain", answer.host)
    return reply(answer.host)


@routes.delete(
    "/hosts/{host}", summary="Remove a (drained) host", response=sc.HostInfo, extension=True
)
async def remove(request: web.Request) -> web.Response:
    require_admin(request)
    host_id = request.match_info["host"]
    force = request.query.get("force", "") in ("1", "true")
    answer = await request.app[GATEWAY].bus.call(
        sc.HOSTS_REMOVE, sc.HostRef(id=host_id, force=force), timeout=30.0
    )
    _audit(request, "host.remove", answer.host)
    return reply(answer.host)
