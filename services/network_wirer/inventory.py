"""The certificates this router serves, for the monitor's expiry alert (ROUTER_CERTS_LIST).

Read from what network-wirer already keeps in memory, no I/O but the default
certificate's file: the internal CA's app certificates (`tls.RouterCertificates.held`,
named by a digest of the app id, so the routes say whose each is), the default
certificate, and ACME's certificates for the custom domains still routed (a domain
removed from its app keeps its file until the next renewal pass, but is served by nobody:
its expiry is nobody's problem).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from slipway.contracts.router import RouterCertificate
from slipway.services.network_wirer.routes import AppRoute
from slipway.services.network_wirer.tls import Held, RouterCertificates, app_file

MAX_LIMIT = 1000


def served(
    routes: Iterable[AppRoute],
    internal: RouterCertificates | None,
    acme: Mapping[str, datetime.datetime] | None = None,
) -> list[RouterCertificate]:
    """Every certificate the router serves, the soonest to expire first."""
    found: list[RouterCertificate] = []
    routes = list(routes)
    if internal is not None:
        default = internal.default()
        if default is not None:
            found.append(_entry(default, sorted(default.names)))
        for route in routes:
            held = internal.held.get(app_file(route.app_id))
            if held is not None:
                # Custom domains first: the name a customer's visitors type, and the alert's.
                hosts = [*route.hosts[1:], *route.hosts[:1]]
                names = [h for h in hosts if h in held.names] or sorted(held.names)
                found.append(_entry(held, names, route))
    for route in routes:
        for host in route.hosts:
            not_after = (acme or {}).get(host)
            if not_after is not None:
                found.append(_entry(Held(frozenset([host]), not_after), [host], route, "acme"))
    return sorted(found, key=lambda c: (c.not_after, c.hostnames))


def _entry(
    held: Held, names: list[str], route: AppRoute | None = None, issuer: str = "internal"
) -> RouterCertificate:
    return RouterCertificate(
        hostnames=names,
        app_id=route.app_id if route else "",
        app_name=route.app_name if route else "",
        issuer=issuer,
        not_after=held.not_after.timestamp(),
    )
