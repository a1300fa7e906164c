"""Desired apps + dynos → the routes the router serves: a pure join, no I/O.

Nothing here talks to HAProxy, NATS or Docker. One `AppRoute` per app: its hostnames
(`<app>.<base domain>` and its custom domains, lowercased), the `up` web dynos it is
routed to (on the app network when the dyno runs beside the router, else its published
port), maintenance, and whether its web dynos crashed (H10 rather than H14).
haproxy/reconcile.py turns routes into HAProxy's runtime state; haproxy/config.py says
how a request is answered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno


@dataclass(frozen=True)
class Upstream:
    """One web dyno the router may send a request to."""

    dyno: str  # "web.1"
    dial: str  # "127.0.0.1:32768"


@dataclass(frozen=True)
class AppRoute:
    """Everything the router needs to know about one app."""

    app_id: str
    app_name: str
    hosts: tuple[str, ...]
    upstreams: tuple[Upstream, ...] = ()
    maintenance: bool = False
    crashed: bool = False  # web dynos exist but none is up, some crashed: H10, not H14
    hsts: bool = False  # the app feature: Strict-Transport-Security on HTTPS answers


def hostname_of(app_name: str, base_domain: str) -> str:
    """The default hostname of an app: `<app>.<base domain>`."""
    return f"{app_name}.{base_domain}".lower()


def dial_of(dyno: Dyno, router_host: str) -> str | None:
    """Where the router connects to a web dyno: on its app network when it runs beside the
    router, else the published port on its host's private address (None: not reachable)."""
    if router_host and dyno.host_id == router_host and dyno.private_address and dyno.private_port:
        return f"{dyno.private_address}:{dyno.private_port}"
    if dyno.address and dyno.port:
        return f"{dyno.address}:{dyno.port}"
    return None


def app_routes(
    apps: Iterable[AppDesired], dynos: Iterable[Dyno], base_domain: str, router_host: str = ""
) -> list[AppRoute]:
    """Join the gateway's apps with the scheduler's dynos: one route per app, by name."""
    web: dict[str, list[Dyno]] = {}
    for dyno in dynos:
        if dyno.process_type == "web" and not dyno.one_off:
            web.setdefault(dyno.app_id, []).append(dyno)
    routes = []
    for app in sorted(apps, key=lambda a: a.app_name):
        dynos_of = sorted(web.get(app.app_id, []), key=lambda d: d.name)
        dials = [(d, dial_of(d, router_host)) for d in dynos_of if d.state == "up"]
        upstreams = tuple(Upstream(d.name, dial) for d, dial in dials if dial)
        crashed = not upstreams and any(d.state == "crashed" for d in dynos_of)
        hosts = [hostname_of(app.app_name, base_domain)]
        hosts += [d.lower() for d in app.domains if d.lower() not in hosts]
        routes.append(
            AppRoute(
                app_id=app.app_id,
                app_name=app.app_name,
                hosts=tuple(hosts),
                upstreams=upstreams,
                maintenance=app.maintenance,
                crashed=crashed,
                hsts=app.hsts,
            )
        )
    return routes


def apps_by_host(routes: Iterable[AppRoute]) -> dict[str, str]:
    """Hostname → app id, to map an access line to its app."""
    return {host: r.app_id for r in routes for host in r.hosts}
