"""SNI endpoints: Heroku's uploaded certificates, which Slipway does not take.

TLS for an app's custom domains is the router's: once `domains:add` stores a
hostname, network-wirer routes it and obtains its certificate by itself (from
the platform's internal CA locally, by ACME on a real deployment) and renews it. No
customer certificate or private key is ever uploaded, so the list of SNI endpoints is
honestly empty, naming one answers 404, and uploading or changing one answers 422;
each message says where the certificates come from instead.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.errors import ErrorBody, InvalidParams
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("sni-endpoints")

AUTOMATIC = (
    "Slipway's router obtains and renews the certificate of every custom domain itself"
    " (its internal CA locally, ACME on a public deployment): add the hostname with"
    " `slipway domains:add` (POST /apps/{app}/domains) and HTTPS follows; certificates"
    " and private keys are never uploaded."
)


class SslCert(views.View, frozen=True, kw_only=True):
    id: str
    subject: str
    issuer: str
    cert_domains: list[str]
    starts_at: views.Timestamp
    expires_at: views.Timestamp
    ca_signed: bool = msgspec.field(name="ca_signed?")
    self_signed: bool = msgspec.field(name="self_signed?")


class SniEndpoint(views.View, frozen=True, kw_only=True):
    """Heroku's SNI endpoint (an uploaded certificate); Slipway never answers one."""

    id: str
    name: str
    display_name: str | None
    certificate_chain: str
    domains: list[str]
    app: views.AppRef
    ssl_cert: SslCert
    created_at: views.Timestamp
    updated_at: views.Timestamp


@routes.get(
    "/apps/{app}/sni-endpoints",
    summary="List uploaded certificates (none: the router issues them)",
    response=list[SniEndpoint],
)
async def list_endpoints(request: web.Request) -> web.Response:
    await app_for(request, Action.READ, "read it")
    return reply([])


@routes.get(
    "/apps/{app}/sni-endpoints/{endpoint}",
    summary="Info for an uploaded certificate",
    response=SniEndpoint,
)
async def endpoint_info(request: web.Request) -> web.Response:
    await app_for(request, Action.READ, "read it")
    raise NotFound(f"Couldn't find that SNI endpoint. {AUTOMATIC}")


@routes.delete(
    "/apps/{app}/sni-endpoints/{endpoint}",
    summary="Remove an uploaded certificate",
    response=SniEndpoint,
)
async def delete_endpoint(request: web.Request) -> web.Response:
    await app_for(request, Action.DEPLOY, "change its certificates")
    raise NotFound(f"Couldn't find that SNI endpoint. {AUTOMATIC}")


@routes.post(
    "/apps/{app}/sni-endpoints",
    summary="Refused: certificates are issued by the router",
    response=ErrorBody,
    status=422,
)
async def create_endpoint(request: web.Request) -> web.Response:
    await app_for(request, Action.DEPLOY, "change its certificates")
    raise InvalidParams(AUTOMATIC)


@routes.patch(
    "/apps/{app}/sni-endpoints/{endpoint}",
    summary="Refused: certificates are issued by the router",
    response=ErrorBody,
    status=422,
)
async def update_endpoint(request: web.Request) -> web.Response:
    await app_for(request, Action.DEPLOY, "change its certificates")
    raise InvalidParams(AUTOMATIC)
