"""Domains: the hostnames an app answers on, in Heroku's shape.

Every app has its default hostname `<app>.<apps domain>` (kind "heroku", not
stored: it follows renames). Custom hostnames (kind "custom") are stored here,
each owned by exactly one app; adding or removing one emits DOMAIN_ADDED /
DOMAIN_REMOVED, on which network-wirer routes it and gets its certificate into the
router (from its internal CA locally, from ACME when configured for a real deployment).
`DESIRED_GET` carries them too (`hostnames_of`), so a missed event heals.

A hostname belongs to one app at a time across all teams: the table's unique
index decides (two adds racing: one wins, the other answers 422), and the
refusal never names the other app or its team. IP literals (any form a resolver
reads as an address: `1.2.3.4`, `127.1`, `0x7f.1`, `[::1]`), special-use names
(`.localhost`, `.local`, `.internal`, `.arpa`, ...) and names under the platform's
own domains (the apps domain, so every app's `<app>.<apps domain>`, and the API's
host) are refused.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import uuid
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from slipway.contracts.router import DOMAIN_ADDED, DOMAIN_REMOVED, DomainAdded, DomainRemoved
from slipway.libs.errors import NotFound
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import Conn, new_uuid, timestamp
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.http.views import NamedRef, Timestamp, View
from slipway.services.gateway.outbox.changes import change

routes = Routes("domains")

# RFC 1123 labels, lowercase, at least two of them; no wildcard, no trailing dot.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
MAX_DOMAINS_PER_APP = 100
# Special-use top-level names (RFC 6761, 6762, 7686; ICANN's .internal): they mean loopback,
# the local network, reverse lookups of addresses or nothing at all, never a customer's site.
SPECIAL_USE = frozenset({"localhost", "local", "internal", "arpa", "invalid", "onion"})


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


def check_hostname(hostname: str, platform_domains: Collection[str]) -> str:
    """The canonical hostname, or a 422 that says what is wrong with it."""
    name = hostname.strip().lower().rstrip(".")
    for domain in platform_domains:
        if name == domain or name.endswith(f".{domain}"):
            raise InvalidParams(f"Hostnames under {domain} are the platform's own.")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidParams(
            f"{hostname[:80]!r} is not a valid hostname: use letters, digits and hyphens "
            "in dot-separated labels, like www.example.com."
        )
    # Every top-level domain starts with a letter; resolvers read a numeric or hex last
    # label (`1.2.3.4`, `127.1`, `0x7f.0x1`) as an IP address, whatever the labels before.
    if not labels[-1][0].isalpha():
        raise InvalidParams(
            f"{hostname[:80]!r} is an IP address, not a hostname: add a name like"
            " www.example.com and point its DNS at the router."
        )
    if labels[-1] in SPECIAL_USE:
        raise InvalidParams(
            f"{hostname[:80]!r} is under .{labels[-1]}, which never names a public host:"
            " use a domain you own in public DNS."
        )
    return name


def platform_domains(gw: Gateway) -> tuple[str, ...]:
    """The domains no customer may add: the apps domain and the API's own host name."""
    api_host = (urlsplit(gw.api_url).hostname or "").lower()
    # An API reached by address needs no entry: IP literals are refused on their own.
    names = (gw.settings.apps_domain.lower(), "" if _is_address(api_host) else api_host)
    return tuple(name for name in names if name)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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


async def _taken(conn: Conn, hostname: str, app_id: str) -> InvalidParams:
    """The refusal of a hostname some app holds; never which app or team, if not this one."""
    cursor = await conn.execute("SELECT app_id FROM domains WHERE hostname = ?", (hostname,))
    owner = await cursor.fetchone()
    if owner is not None and owner["app_id"] == app_id:
        return InvalidParams(f"{hostname} is already added to this app.")
    return InvalidParams(
        f"{hostname} is already in use by another app: a hostname belongs to one app at"
        " a time. Remove it there first, or choose another hostname."
    )


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
    hostname = check_hostname(body.hostname, platform_domains(gw))
    async with change(gw, actor(request)) as tx:
        if len(await _rows(tx.conn, app.id)) >= MAX_DOMAINS_PER_APP:
            raise InvalidParams(f"An app holds at most {MAX_DOMAINS_PER_APP} custom domains.")
        domain_id, at = new_uuid(), timestamp()
        try:
            # No look-up first: the unique index on hostname decides, races included.
            await tx.conn.execute(
                "INSERT INTO domains (id, app_id, hostname, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (domain_id, app.id, hostname, at, at),
            )
        except sqlite3.IntegrityError:
            raise await _taken(tx.conn, hostname, app.id) from None
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
