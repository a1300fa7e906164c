"""The router's configuration as a pure function: desired apps + dynos → Caddy's JSON.

Nothing here talks to Caddy, NATS or Docker, so every rule is tested without servers.

Each app gets one route matching its hostnames (`<app>.<base domain>` and its custom
domains). Inside, in order:

1. `X-Request-Id`: kept when the client sent one, else `{http.request.uuid}`; echoed
   on the response so a customer can quote it (and the access log reads it);
2. the answer: the maintenance page (503), H14 when no web dyno runs (503), H10 when
   web dynos exist but all crashed (503), or `reverse_proxy` over the `up` web dynos:
   round robin, retries on connection failure for `try_duration`, passive health
   (a failed dial benches a dyno for `fail_duration`), 30 s to the first response byte
   (then H12). No active health check unless `health_path` is set: like Heroku's router,
   the platform sends an app no request a user did not send (a dyno is routed once the
   scheduler saw it bind $PORT, and one that stops accepting is benched by its refusals).

Errors of the proxy (every dyno refused, or H12) are answered by the server's error
routes with Heroku's pages. A host no app owns gets the 404 page. Pages the router
answers itself carry `X-Router-Error: <code>` so the access log names the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno
from slipway.libs.caddy import HTTP_SERVER, HTTPS_SERVER, RouterAddress, boot_config
from slipway.services.network_wirer.pages import Pages

ACCESS_LOGGER = "router"  # Caddy names the access logger http.log.access.<this>
ACCESS_LOG_NAME = f"http.log.access.{ACCESS_LOGGER}"
PROXY_LOG_NAME = "http.handlers.reverse_proxy"
ERROR_LOG_NAME = "http.log.error"
# The access log's `user_id` field: Caddy fills it from this placeholder, which the `map`
# handler in front of each app's proxy answers with the name of the dyno that answered.
DYNO_PLACEHOLDER = "{http.auth.user.id}"
ERROR_HEADER = "X-Router-Error"
REQUEST_ID_HEADER = "X-Request-Id"


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


@dataclass(frozen=True)
class RouterOptions:
    """How the router behaves; the same for every app."""

    address: RouterAddress = field(default_factory=RouterAddress)
    storage_dir: str = "var/caddy/storage"
    access_log: str | None = None  # Caddy network address ("unix//…"): the access-log listener
    upstream_timeout: float = 30.0  # Heroku's H12
    try_duration: float = 5.0
    try_interval: float = 0.25
    fail_duration: float = 10.0
    health_path: str = ""  # a path turns active health checks on (GET it every interval)
    health_interval: float = 5.0
    tls_issuer: str = "internal"  # or "acme" for real deployments
    acme_email: str = ""
    acme_ca: str = ""  # empty: Let's Encrypt's production directory
    public_http_port: int | None = None  # what clients connect to, when a NAT/LB sits in front
    public_https_port: int | None = None
    # The Docker host Caddy runs on: its dynos are dialled on their app network ("": never).
    router_host: str = "local"


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


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
            )
        )
    return routes


def _page(html: str, status: int, code: str) -> dict[str, Any]:
    headers = {"Content-Type": ["text/html; charset=utf-8"], "Cache-Control": ["no-store"]}
    if code:
        headers[ERROR_HEADER] = [code]
    if status == 503:
        headers["Retry-After"] = ["30"]
    return {"handler": "static_response", "status_code": status, "headers": headers, "body": html}


def _request_id() -> list[dict[str, Any]]:
    """Keep the client's X-Request-Id or make one; echo it on the response."""
    return [
        {
            "match": [{"header": {REQUEST_ID_HEADER: None}}],  # null: the header is absent
            "handle": [
                {
                    "handler": "headers",
                    "request": {"set": {REQUEST_ID_HEADER: ["{http.request.uuid}"]}},
                }
            ],
        },
        {
            "handle": [
                {
                    "handler": "headers",
                    "response": {
                        "set": {REQUEST_ID_HEADER: ["{http.request.header.X-Request-Id}"]},
                        "deferred": True,
                    },
                }
            ]
        },
    ]


def _proxy(
    route: AppRoute, options: RouterOptions, public_port: int, scheme: str
) -> dict[str, Any]:
    health: dict[str, Any] = {
        "passive": {"fail_duration": _seconds(options.fail_duration), "max_fails": 1}
    }
    if options.health_path:
        health["active"] = {
            "uri": options.health_path,
            "interval": _seconds(options.health_interval),
            "timeout": _seconds(min(options.health_interval, 5.0)),
        }
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": u.dial} for u in route.upstreams],
        "load_balancing": {
            "selection_policy": {"policy": "round_robin"},
            "try_duration": _seconds(options.try_duration),
            "try_interval": _seconds(options.try_interval),
        },
        "health_checks": health,
        "transport": {
            "protocol": "http",
            "dial_timeout": _seconds(min(options.try_duration, 5.0)),
            "response_header_timeout": _seconds(options.upstream_timeout),
        },
        # Caddy sets X-Forwarded-For/-Proto/-Host itself (and ignores the client's, as no
        # proxy in front is trusted); the port is the one the client connected to.
        "headers": {
            "request": {
                "set": {"X-Forwarded-Port": [str(public_port)], "X-Forwarded-Proto": [scheme]}
            }
        },
    }


def _dyno_names(route: AppRoute) -> dict[str, Any]:
    """Name the dyno that answered, for the access line (see DYNO_PLACEHOLDER).

    `map` outputs are computed when read, and the access log reads them after the proxy
    picked its upstream. Naming the dyno from the proxy's own debug log instead would
    make Caddy encode every request for that logger: a quarter of its CPU per request.
    """
    return {
        "handler": "map",
        "source": "{http.reverse_proxy.upstream.hostport}",
        "destinations": [DYNO_PLACEHOLDER],
        "mappings": [{"input": u.dial, "outputs": [u.dyno]} for u in route.upstreams],
        "defaults": [""],
    }


def _answer(
    route: AppRoute, options: RouterOptions, pages: Pages, public_port: int, scheme: str
) -> list[dict[str, Any]]:
    if route.maintenance:
        return [_page(pages.maintenance, 503, "H80")]
    if route.upstreams:
        return [_dyno_names(route), _proxy(route, options, public_port, scheme)]
    if route.crashed:
        return [_page(pages.app_crashed, 503, "H10")]
    return [_page(pages.no_web_dynos, 503, "H14")]


def app_route_json(
    route: AppRoute, options: RouterOptions, pages: Pages, public_port: int, scheme: str
) -> dict[str, Any]:
    """The Caddy route of one app on one server (`@id` makes it addressable at /id/...)."""
    return {
        "@id": f"app-{route.app_id}-{scheme}",
        "match": [{"host": list(route.hosts)}],
        "terminal": True,
        "handle": [
            {
                "handler": "subroute",
                "routes": [
                    *_request_id(),
                    {"handle": _answer(route, options, pages, public_port, scheme)},
                ],
            }
        ],
    }


def _error_routes(pages: Pages) -> list[dict[str, Any]]:
    # Only reverse_proxy raises errors here: 504 is a dyno that did not answer in time
    # (H12); 502/503 mean no dyno could be reached although some were routed (H10).
    return [
        {
            "match": [{"expression": "{http.error.status_code} == 504"}],
            "handle": [_page(pages.timeout, 503, "H12")],
            "terminal": True,
        },
        {"handle": [_page(pages.app_crashed, 503, "H10")], "terminal": True},
    ]


def _server_routes(
    routes: list[AppRoute], options: RouterOptions, pages: Pages, port: int, scheme: str
) -> list[dict[str, Any]]:
    found = [app_route_json(r, options, pages, port, scheme) for r in routes]
    return [*found, {"handle": [_page(pages.not_found, 404, "")], "terminal": True}]


def _tls(options: RouterOptions) -> dict[str, Any]:
    if options.tls_issuer == "acme":
        issuer: dict[str, Any] = {"module": "acme"}
        if options.acme_email:
            issuer["email"] = options.acme_email
        if options.acme_ca:
            issuer["ca"] = options.acme_ca
    else:
        issuer = {"module": "internal"}
    return {"automation": {"policies": [{"issuers": [issuer]}]}}


def _logging(access_log: str) -> dict[str, Any]:
    # Caddy 2.6 encodes the whole request into the loggers of the proxy and of the server's
    # errors on every request, whatever their level, unless no log takes them at all. What
    # they would say is in the access line already (status, and X-Router-Error's code).
    return {
        "logs": {
            "default": {"exclude": [ACCESS_LOG_NAME, PROXY_LOG_NAME, ERROR_LOG_NAME]},
            ACCESS_LOGGER: {
                "writer": {"output": "net", "address": access_log},
                "encoder": {"format": "json"},
                "include": [ACCESS_LOG_NAME],
            },
        }
    }


def caddy_config(routes: list[AppRoute], options: RouterOptions, pages: Pages) -> dict[str, Any]:
    """The whole configuration network-wirer loads: the boot skeleton plus every app."""
    config = boot_config(options.address, options.storage_dir)
    servers = config["apps"]["http"]["servers"]
    http_port = options.public_http_port or options.address.http_port
    https_port = options.public_https_port or options.address.https_port
    for name, port, scheme in (
        (HTTP_SERVER, http_port, "http"),
        (HTTPS_SERVER, https_port, "https"),
    ):
        server = servers[name]
        server["routes"] = _server_routes(routes, options, pages, port, scheme)
        server["errors"] = {"routes": _error_routes(pages)}
        if options.access_log:
            server["logs"] = {"default_logger_name": ACCESS_LOGGER}
    # A route change replaces the servers: requests in flight on the old ones finish first
    # (a rolling deploy changes routes several times while traffic flows).
    config["apps"]["http"]["grace_period"] = _seconds(options.upstream_timeout + 5.0)
    config["apps"]["tls"] = _tls(options)
    if options.access_log:
        config["logging"] = _logging(options.access_log)
    return config


def apps_by_host(routes: Iterable[AppRoute]) -> dict[str, str]:
    """Hostname → app id, to map an access line to its app."""
    return {host: r.app_id for r in routes for host in r.hosts}
