"""Domains: the hostnames an app answers on, in Heroku's shape.

Every app has its default hostname `<app>.<apps domain>` (kind "heroku", not
stored: it follows renames). Custom hostnames (kind "custom") are stored here,
each owned by exactly one app; adding or removing one emits DOMAIN_ADDED /
DOMAIN_REMOVED, on which network-wirer routes it and Caddy gets its certificate
(from its internal CA locally, from ACME when configured for a real deployment).
`DESIRED_GET` carries them too (`hostnames_of`), so a missed event heals.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from slipway.contracts.router import DOMAIN_ADDED, DOMAIN_REMOVED, DomainAdded, DomainRemoved
from slipway.libs.errors import NotFound
from slipway.services.gateway import store
from slipway.services.gateway.auth import Action, actor, app_for
from slipway.services.gateway.changes import change
from slipway.services.gateway.errors import InvalidParams
from slipway.services.gateway.routing import Routes, read_body, reply
from slipway.services.gateway.schemas import Body
from slipway.services.gateway.state import GATEWAY, Gateway
from slipway.services.gateway.store import Conn, new_uuid, timestamp
from slipway.services.gateway.views import NamedRef, Timestamp, View

routes = Routes("domains")

# RFC 1123 labels, lowercase, at least two of them; no wildcard, no trailing dot.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
MAX_DOMAINS_PER_APP = 100


class CreateDomain(Body, frozen=True, kw_only=True):
    hostname: str
    sni_endpoint: str | None = None


class Domain(View, frozen=True, kw_only=True):
    """Heroku's domain resource."""

    id: str
    hostname: str
    kind: str  # "heroku" (the default hostname) or "custom"
    app: NamedRef
    cname: str | None
    status: str
    created_at: Timestamp
    updated_at: Timestamp
    acm_status: str | None = None
    acm_status_reason: str | None = None
    sni_endpoint: dict[str, str] | None = None


def check_hostname(hostname: str, apps_domain: str) -> str:
    """The canonical hostname, or a 422 that says what is wrong with it."""
    name = hostname.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidParams(
            f"{hostname[:80]!r} is not a valid hostname: use letters, digits and hyphens "
            "in dot-separated labels, like www.example.com."
        )
    if name == apps_domain or name.endswith(f".{apps_domain}"):
        raise InvalidParams(f"Hostnames under {apps_domain} are the platform's own.")
    return name


def _default_domain(gw: Gateway, app: store.App) -> Domain:
    hostname = f"{app.name}.{gw.settings.apps_domain}"
    return Domain(
        # Stable for the app and hostname, so a client can GET it by id too.
        id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{app.id}.{hostname}")),
        hostname=hostname,
        kind="heroku",
        app=NamedRef(id=app.id, name=app.name),
        cname=None,
        status="succeeded",
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def _custom(app: store.App, row: Any) -> Domain:
    return Domain(
        id=row["id"],
        hostname=row["hostname"],
        kind="custom",
        app=NamedRef(id=app.id, name=app.name),
        cname=None,  # point the hostname's DNS at the router (A/AAAA or CNAME)
        status="succeeded",
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _rows(conn: Conn, app_id: str) -> list[Any]:
    cursor = await conn.execute(
        "SELECT * FROM domains WHERE app_id = ? ORDER BY hostname", (app_id,)
    )
    return list(await cursor.fetchall())


async def hostnames_of(conn: Conn, app_id: str) -> list[str]:
    """The app's custom hostnames (what DESIRED_GET sends network-wirer)."""
    return [row["hostname"] for row in await _rows(conn, app_id)]


async def _find(conn: Conn, app_id: str, ident: str) -> Any:
    cursor = await conn.execute(
        "SELECT * FROM domains WHERE app_id = ? AND (id = ? OR hostname = ?)",
        (app_id, ident, ident.lower()),
    )
    return await cursor.fetchone()


@routes.post(
    "/apps/{app}/domains",
    summary="Add a custom domain",
    body=CreateDomain,
    response=Domain,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "add domains to the app")
    body = await read_body(request, CreateDomain)
    hostname = check_hostname(body.hostname, gw.settings.apps_domain)
    async with change(gw, actor(request)) as tx:
        cursor = await tx.conn.execute("SELECT app_id FROM domains WHERE hostname = ?", (hostname,))
        owner = await cursor.fetchone()
        if owner is not None:
            where = "this app" if owner["app_id"] == app.id else "another app"
            raise InvalidParams(f"{hostname} is already added to {where}.")
        if len(await _rows(tx.conn, app.id)) >= MAX_DOMAINS_PER_APP:
            raise InvalidParams(f"An app holds at most {MAX_DOMAINS_PER_APP} custom domains.")
        domain_id, at = new_uuid(), timestamp()
        await tx.conn.execute(
            "INSERT INTO domains (id, app_id, hostname, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (domain_id, app.id, hostname, at, at),
        )
        tx.audit(
            app.team_id,
            "domain.add",
            app_name=app.name,
            app_id=app.id,
            details={"hostname": hostname},
        )
        tx.emit(
            DOMAIN_ADDED,
            DomainAdded(
                app_id=app.id,
                app_name=app.name,
                team_id=app.team_id,
                domain_id=domain_id,
                hostname=hostname,
                actor=tx.actor.email,
            ),
        )
        row = await _find(tx.conn, app.id, domain_id)
    return reply(_custom(app, row), 201)


@routes.get("/apps/{app}/domains", summary="List the app's domains", response=list[Domain])
async def list_domains(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "see the app's domains")
    rows = await _rows(gw.reader, app.id)
    return reply([_default_domain(gw, app), *(_custom(app, row) for row in rows)])


@routes.get("/apps/{app}/domains/{domain}", summary="Domain info", response=Domain)
async def info(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "see the app's domains")
    ident = request.match_info["domain"]
    default = _default_domain(gw, app)
    if ident in (default.id, default.hostname):
        return reply(default)
    row = await _find(gw.reader, app.id, ident)
    if row is None:
        raise NotFound("Couldn't find that domain.")
    return reply(_custom(app, row))


@routes.delete("/apps/{app}/domains/{domain}", summary="Remove a custom domain", response=Domain)
async def delete(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "remove domains from the app")
    ident = request.match_info["domain"]
    default = _default_domain(gw, app)
    if ident in (default.id, default.hostname):
        raise InvalidParams("The app's default domain cannot be removed.")
    async with change(gw, actor(request)) as tx:
        row = await _find(tx.conn, app.id, ident)
        if row is None:
            raise NotFound("Couldn't find that domain.")
        await tx.conn.execute("DELETE FROM domains WHERE id = ?", (row["id"],))
        tx.audit(
            app.team_id,
            "domain.remove",
            app_name=app.name,
            app_id=app.id,
            details={"hostname": row["hostname"]},
        )
        tx.emit(
            DOMAIN_REMOVED,
            DomainRemoved(
                app_id=app.id,
                app_name=app.name,
                team_id=app.team_id,
                domain_id=row["id"],
                hostname=row["hostname"],
                actor=tx.actor.email,
            ),
        )
    return reply(_custom(app, row))
