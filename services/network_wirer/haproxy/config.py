"""HAProxy's configuration as a pure function: desired routes → the text HAProxy boots with.

Nothing here talks to HAProxy; reconcile.py changes a running HAProxy to match the same
`Layout` through the runtime API, and only renders this text again when the pool of
backends runs out (a seamless reload).

How a request is routed:

1. The Host header (first one, port stripped, lowercased) is looked up in the host map
   (`map_str`): the value is `<backend>:<state>`, e.g. `be_12:up`.
2. `X-Request-Id` is kept when the client sent exactly one that is 20 to 200 characters of
   `[A-Za-z0-9+=/-]` (a UUID qualifies), else replaced by a fresh UUID; it is echoed on
   every response, the router's own pages included.
   `X-Slipway-Probe` (network-wirer's uptime probe, uptime.py) is logged as its SHA-256
   only and removed: no dyno ever sees it.
3. `X-Forwarded-For` (the client's address: no proxy in front is trusted), `-Proto`,
   `-Port` (the public port) are set, `Via: 1.1 slipway` is added.
4. The state answers, or the backend does:

   | situation                        | status | code | how HAProxy tells it                  |
   | -------------------------------- | ------ | ---- | ------------------------------------- |
   | no app owns the host             | 404    |      | the host is not in the map            |
   | maintenance                      | 503    | H80  | state `maint`                          |
   | no web dyno                      | 503    | H14  | state `h14`                            |
   | web dynos, all crashed           | 503    | H10  | state `h10`                            |
   | no dyno accepted the connection  | 503    | H10  | termination `SC`/`sC` (after retries)  |
   | no response headers within 30 s  | 503    | H12  | termination `sH` (`timeout server`)    |
   | dyno closed before its headers   | 503    | H13  | termination `SH` (or `PH`: invalid)    |
   | dyno closed while sending body   | (dyno) | H18  | termination `SD`                       |
   | client idle for 55 s mid-stream  | (dyno) | H15  | termination `cD` (`timeout client`)    |
   | client closed before the answer  | (dyno) | H27  | termination `CH`/`CD`/`CQ`/`CR`        |

   HAProxy's own 502/503/504 answers use Heroku's pages with status 503, as Heroku's
   router does. HAProxy has one server timeout: after the headers, 30 s of silence from
   a streaming dyno also ends the request (`sD`, H12-like), where Heroku allows 55 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import sha256
from pathlib import Path

from slipway.libs.haproxy import ACCESS_LOG_FORMAT, RouterPaths, RouterPorts
from slipway.services.network_wirer.pages import Pages

MAP_SEPARATOR = ":"
BACKEND_PREFIX = "be_"
FALLBACK_BACKEND = "be_none"  # no servers: a route state nobody expected answers H10
VIA = "1.1 slipway"
HSTS_FLAG = "hsts"  # the map value's third field: the app feature `hsts` is on
HSTS_HEADER = "max-age=31536000"  # a year, the usual; no includeSubDomains: hosts are shared
ERROR_HEADER = "X-Router-Error"
# network-wirer's uptime probe (uptime.py) carries a secret in this header; the router logs
# only its SHA-256 (so a line can be recognised, and the secret is never written anywhere)
# and removes the header, so the dyno never sees the secret and a customer cannot learn it.
PROBE_HEADER = "X-Slipway-Probe"
# Heroku's rule for a client's request id (its router documentation).
REQUEST_ID_PATTERN = "^[A-Za-z0-9+=/-]{20,200}$"
# An ACME HTTP-01 request (RFC 8555 8.3: the token is base64url); the router answers it
# itself from the acme map, before any app is looked up, so that it works for a domain
# whose app is down and never reaches a dyno.
# Single-quoted in the file: HAProxy expands nothing there.
ACME_CHALLENGE_PATH = "'^/[.]well-known/acme-challenge/[A-Za-z0-9_-]{1,128}$'"
# What the map may hold: a hostname (the gateway validates domains; this keeps a bad one
# from splitting a runtime command or the map file's `key value` lines).
HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\Z")
SERVER_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class State:
    """A route's state, the second half of its map value."""

    UP = "up"
    MAINTENANCE = "maint"
    NO_WEB = "h14"
    CRASHED = "h10"


@dataclass(frozen=True)
class HAProxyOptions:
    """How the router behaves and where its files are; the same for every app."""

    data_dir: Path
    ports: RouterPorts = field(default_factory=RouterPorts)
    public_http_port: int | None = None  # what clients connect to, when a NAT/LB sits in front
    public_https_port: int | None = None
    upstream_timeout: float = 30.0  # Heroku's H12
    connect_timeout: float = 5.0
    client_timeout: float = 55.0  # Heroku's H15
    tunnel_timeout: float = 3600.0  # websockets, once upgraded
    retries: int = 3  # other dynos tried when one refuses the connection
    # TCP checks bring back a dyno that `observe` benched after a refused connection; each
    # server is one connection per interval (10,000 dynos at 5 s: 2,000 per second).
    # 0: no checks (and no benching: a refused connection is only retried elsewhere).
    check_interval: float = 5.0
    # An old worker keeps serving its websockets after a reload for at most this long.
    hard_stop_after: float = 3600.0

    @property
    def paths(self) -> RouterPaths:
        return RouterPaths(self.data_dir.resolve())

    @property
    def map_path(self) -> Path:
        """The host map; its path is also its name in runtime commands."""
        return self.paths.data_dir / "hosts.map"

    @property
    def acme_map_path(self) -> Path:
        """HTTP-01 challenges being answered: token → key authorization (acme.py fills it)."""
        return self.paths.data_dir / "acme.map"

    @property
    def pages_dir(self) -> Path:
        return self.paths.data_dir / "pages"

    @property
    def crt_list(self) -> Path:
        return self.paths.data_dir / "certs" / "crt-list.txt"

    @property
    def default_certificate(self) -> Path:
        """Served to a client whose SNI names no certificate (HAProxy needs one to bind)."""
        return self.paths.data_dir / "certs" / "default.pem"


@dataclass(frozen=True)
class Server:
    """One dyno in a backend."""

    name: str  # HAProxy's server name: the dyno's, plus a digest of its address
    dial: str  # "127.0.0.1:32768"

    @property
    def dyno(self) -> str:
        return dyno_of(self.name)


@dataclass(frozen=True)
class Layout:
    """Everything HAProxy must hold: the host map and each backend's servers."""

    pool_size: int
    hosts: Mapping[str, str]  # host → "be_N:state"
    servers: Mapping[str, frozenset[Server]]  # backend → servers (only non-empty ones)


def backend_name(index: int) -> str:
    return f"{BACKEND_PREFIX}{index}"


def backend_index(name: str) -> int | None:
    """N for `be_N`, None for any other name."""
    if name.startswith(BACKEND_PREFIX) and name[len(BACKEND_PREFIX) :].isdigit():
        return int(name[len(BACKEND_PREFIX) :])
    return None


@lru_cache(maxsize=65536)  # a pass names every dyno of every app again
def server_name(dyno: str, dial: str) -> str:
    """A server name unique per dyno and address: during a rolling deploy the old and the
    new `web.1` run side by side, and a restarted dyno may come back on another port."""
    safe = SERVER_NAME_UNSAFE.sub("_", dyno)[:60] or "dyno"
    return f"{safe}--{sha256(dial.encode()).hexdigest()[:10]}"


def dyno_of(name: str) -> str:
    """The dyno's name in a server name ("web.1--ab12…" → "web.1")."""
    return name.rsplit("--", 1)[0] if "--" in name else name


def map_value(backend: str, state: str, hsts: bool = False) -> str:
    """`<backend>:<state>`, and `:hsts` when the app's HTTPS answers carry HSTS."""
    value = f"{backend}{MAP_SEPARATOR}{state}"
    return f"{value}{MAP_SEPARATOR}{HSTS_FLAG}" if hsts else value


def split_value(value: str) -> tuple[str, str]:
    """(backend, state) of a map value (flags after them are left out)."""
    backend, _, rest = value.partition(MAP_SEPARATOR)
    return backend, rest.partition(MAP_SEPARATOR)[0]


def server_options(options: HAProxyOptions) -> str:
    """The options every dyno server gets, in the configuration and in `add server` alike
    (2.6 applies no `default-server` line to servers added at runtime)."""
    # A server added at runtime gets no idle-connection pool in 2.6 (pool-max-conn 0,
    # pool-purge-delay 0: `show servers conn`), where a configured one has an unlimited
    # pool; without it every request to a dyno costs about twice the router
    # CPU (bench/router.py). Purged after 1 s idle, not 5: a drained dyno's server can only
    # be deleted once its idle connections are gone.
    pool = "pool-max-conn -1 pool-purge-delay 1s"
    interval = round(options.check_interval * 1000)
    if interval <= 0:
        return pool  # no checks, as HAProxyOptions.check_interval promises ("inter 0" is invalid)
    # `observe layer4`: a refused connection marks the dyno down at once (the request
    # is retried on another); the TCP check brings it back when it accepts again.
    return (
        f"{pool} check inter {interval} fall 3 rise 1 observe layer4 error-limit 1"
        " on-error mark-down"
    )


def map_text(hosts: Mapping[str, str]) -> str:
    """The host map file: `host value` per line, sorted so equal layouts write equal files."""
    return "".join(f"{host} {value}\n" for host, value in sorted(hosts.items()))


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


def _quote(text: str) -> str:
    # HAProxy's double-quoted arguments: a backslash escapes `"`, `\`, `$` and `#`.
    return '"' + re.sub(r'(["\\$#])', r"\\\1", text) + '"'


def _acme_lines(options: HAProxyOptions) -> list[str]:
    """HTTP-01 answers from the acme map (runtime `add map`, no reload): the 4th path field
    is the token; a token not in the map falls through to the app, as any other path."""
    return [
        f"    http-request set-var(txn.acme) path,field(4,/),map({options.acme_map_path})"
        f" if {{ path -m reg {ACME_CHALLENGE_PATH} }}",
        "    http-request return status 200 content-type text/plain"
        ' lf-string "%[var(txn.acme)]" hdr Cache-Control no-store'
        " if { var(txn.acme) -m found }",
    ]


def _hsts_lines() -> list[str]:
    """Strict-Transport-Security on HTTPS answers of apps with the feature on (RFC 6797
    8.1: a browser ignores it over plain HTTP, so it is never sent there)."""
    return [
        f"    http-request set-var(txn.flags) var(txn.route),field(3,{MAP_SEPARATOR})",
        f'    http-after-response set-header Strict-Transport-Security "{HSTS_HEADER}"'
        f" if {{ var(txn.flags) -m str {HSTS_FLAG} }}",
    ]


def _frontend(name: str, bind: str, scheme: str, port: int, options: HAProxyOptions) -> str:
    pages = options.pages_dir
    html = '"text/html; charset=utf-8"'
    page_headers = "hdr Cache-Control no-store"
    unavailable = f"{page_headers} hdr Retry-After 30"
    lines = [
        f"frontend {name}",
        f"    bind {bind}",
        # The first Host header, whole (hdr() would split it at commas), port stripped.
        "    http-request set-var(txn.host) req.fhdr(host,1),field(1,:),lower",
        "    http-request set-var(txn.pathq) pathq",
        f"    http-request set-var(txn.route) var(txn.host),map_str({options.map_path})",
        f"    http-request set-var(txn.state) var(txn.route),field(2,{MAP_SEPARATOR})",
        "    http-request set-header X-Request-Id %[uuid] unless"
        " { req.fhdr_cnt(x-request-id) eq 1 }"
        f" {{ req.fhdr(x-request-id) -m reg {REQUEST_ID_PATTERN} }}",
        "    http-request set-var(txn.rid) req.fhdr(x-request-id)",
        f"    http-request set-var(txn.probe) req.fhdr({PROBE_HEADER.lower()},1),sha2(256),base64"
        f" if {{ req.fhdr_cnt({PROBE_HEADER.lower()}) gt 0 }}",
        f"    http-request del-header {PROBE_HEADER.lower()}",
        # HTTP-01 validation always comes over plain HTTP (RFC 8555 8.3).
        *(_acme_lines(options) if scheme == "http" else []),
        "    http-request set-header X-Forwarded-For %[src]",
        f"    http-request set-header X-Forwarded-Proto {scheme}",
        f"    http-request set-header X-Forwarded-Port {port}",
        f"    http-request add-header Via {_quote(VIA)}",
        # Heroku's: when the router received the request, in ms since the epoch (APM agents
        # read it for queue time); a client's own value is replaced, never trusted.
        "    http-request set-header X-Request-Start %[date(0,ms)]",
        "    http-after-response set-header X-Request-Id %[var(txn.rid)]",
        *(_hsts_lines() if scheme == "https" else []),
        f"    http-request return status 404 content-type {html} file {pages}/not_found.html"
        f" {page_headers} if !{{ var(txn.route) -m found }}",
    ]
    for state, page, code in (
        (State.MAINTENANCE, "maintenance", "H80"),
        (State.NO_WEB, "no_web_dynos", "H14"),
        (State.CRASHED, "app_crashed", "H10"),
    ):
        lines.append(
            f"    http-request return status 503 content-type {html} file {pages}/{page}.html"
            f" {unavailable} hdr {ERROR_HEADER} {code} if {{ var(txn.state) -m str {state} }}"
        )
    lines += [
        f"    use_backend %[var(txn.route),field(1,{MAP_SEPARATOR})]"
        f" if {{ var(txn.state) -m str {State.UP} }}",
        f"    default_backend {FALLBACK_BACKEND}",
    ]
    return "\n".join(lines)


OPTIONS_LINE = "# options "


def options_digest(options: HAProxyOptions) -> str:
    """A digest of everything in the configuration that is not the layout: the text of an
    empty layout and the options every server gets. A file written under other settings
    (a timeout, the check interval, a port changed and the service restarted) has another
    one, so the reconciler knows to write the file again and reload once."""
    empty = _render(Layout(pool_size=0, hosts={}, servers={}), options)
    return sha256(f"{empty}\n{server_options(options)}".encode()).hexdigest()[:16]


def written_digest(config: Path) -> str | None:
    """The options digest a configuration file was written with (None: not ours)."""
    try:
        with config.open() as file:
            first = file.readline()
    except OSError:
        return None
    return first[len(OPTIONS_LINE) :].strip() if first.startswith(OPTIONS_LINE) else None


def render(layout: Layout, options: HAProxyOptions) -> str:
    """The whole configuration file for `layout` (its map is `map_text`, written beside),
    its first line the options digest."""
    return f"{OPTIONS_LINE}{options_digest(options)}\n{_render(layout, options)}"


def _render(layout: Layout, options: HAProxyOptions) -> str:
    paths = options.paths
    ports = options.ports
    host = ports.listen_host
    http_port = options.public_http_port or ports.http_port
    https_port = options.public_https_port or ports.https_port
    pages = options.pages_dir
    sections = [
        "\n".join(
            [
                "# Written by network-wirer; changes go through the runtime API, not here.",
                "global",
                "    master-worker",
                # The runtime API: a unix socket, 0600, no TCP listener anywhere.
                f"    stats socket {paths.runtime_socket} mode 600 level admin expose-fd listeners",
                "    stats timeout 10m",
                f"    log unix@{paths.log_socket} len 8192 format raw local0 info",
                f"    hard-stop-after {_seconds(options.hard_stop_after)}",
                "    ssl-default-bind-options ssl-min-ver TLSv1.2",
            ]
        ),
        "\n".join(
            [
                "defaults",
                "    mode http",
                "    log global",
                f"    log-format {_quote(ACCESS_LOG_FORMAT)}",
                "    option dontlognull",
                "    balance roundrobin",
                f"    retries {options.retries}",
                "    retry-on conn-failure",
                "    option redispatch 1",
                f"    timeout connect {_seconds(options.connect_timeout)}",
                f"    timeout client {_seconds(options.client_timeout)}",
                f"    timeout server {_seconds(options.upstream_timeout)}",
                f"    timeout tunnel {_seconds(options.tunnel_timeout)}",
                "    timeout http-request 10s",
                "    timeout queue 5s",
                f"    errorfile 502 {pages}/h13.http",
                f"    errorfile 503 {pages}/h10.http",
                f"    errorfile 504 {pages}/h12.http",
            ]
        ),
        _frontend("fe_http", f"{host}:{ports.http_port}", "http", http_port, options),
        _frontend(
            "fe_https",
            # The first certificate is the default one (a client without SNI gets it).
            f"{host}:{ports.https_port} ssl crt {options.default_certificate}"
            f" crt-list {options.crt_list} alpn h2,http/1.1",
            "https",
            https_port,
            options,
        ),
        f"backend {FALLBACK_BACKEND}",
    ]
    extra = server_options(options)
    for index in range(layout.pool_size):
        name = backend_name(index)
        lines = [f"backend {name}"]
        for server in sorted(layout.servers.get(name, ()), key=lambda s: s.name):
            lines.append(f"    server {server.name} {server.dial} {extra}".rstrip())
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def error_response(status_line: str, code: str, html: str) -> bytes:
    """A whole HTTP response for `errorfile` (HAProxy sends it as it is)."""
    body = html.encode()
    head = (
        f"HTTP/1.1 {status_line}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Cache-Control: no-store\r\n"
        "Retry-After: 30\r\n"
        f"{ERROR_HEADER}: {code}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def page_files(pages: Pages) -> dict[str, bytes]:
    """The files under `pages_dir`: bodies for `http-request return`, responses for errorfile."""
    unavailable = "503 Service Unavailable"
    return {
        "not_found.html": pages.not_found.encode(),
        "maintenance.html": pages.maintenance.encode(),
        "no_web_dynos.html": pages.no_web_dynos.encode(),
        "app_crashed.html": pages.app_crashed.encode(),
        "h10.http": error_response(unavailable, "H10", pages.app_crashed),
        "h12.http": error_response(unavailable, "H12", pages.timeout),
        "h13.http": error_response(unavailable, "H13", pages.app_crashed),
    }


@lru_cache(maxsize=65536)  # a pass checks every host of every app again
def _valid_host(host: str) -> bool:
    return HOSTNAME.match(host) is not None


def valid_hosts(hosts: Iterable[str]) -> list[str]:
    """The hosts the map may hold (lowercase hostnames); others are left out."""
    return [h for h in (host.lower() for host in hosts) if _valid_host(h)]
