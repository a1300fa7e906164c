"""HAProxy's access lines → RouterAccess, the record the log-shipper gets for each request.

libs/haproxy's `LogReceiver` decodes each datagram into an `AccessRecord`; here the
host becomes the app, the server name the dyno, and the route state or HAProxy's
termination flags the Heroku error code (the table is in config.py's docstring).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from slipway.contracts.logs import RouterAccess
from slipway.libs.haproxy import AccessRecord
from slipway.services.network_wirer.haproxy.config import State, dyno_of
from slipway.services.network_wirer.routes import AppRoute, apps_by_host

STATE_CODES = {State.MAINTENANCE: "H80", State.NO_WEB: "H14", State.CRASHED: "H10"}
# HAProxy's termination state: the first letter says who ended the session (c/C client,
# s/S server; lowercase: a timeout), the second at which step (C connect, H headers,
# D data). Only pairs Heroku names are here.
TERMINATION_CODES = {
    "SC": "H10",  # every dyno refused the connection, even after retries
    "sC": "H10",  # no dyno accepted within the connect timeout
    "sH": "H12",  # no response headers within the server timeout
    "SH": "H13",  # the dyno closed the connection without a response
    "PH": "H13",  # the dyno's response was not valid HTTP
    "SD": "H18",  # the dyno closed the connection while sending its response
    "sD": "H12",  # the dyno fell silent mid-response for the server timeout
    "cD": "H15",  # the client stayed idle for the client timeout mid-response
    "CH": "H27",  # the client went away before the response
    "CD": "H27",
    "CQ": "H27",
    "CR": "H27",
}
# HAProxy's own error answers are Heroku's pages with 503 (config.py's errorfiles).
ROUTER_ANSWERS = {502, 503, 504}


def error_code(record: AccessRecord) -> str:
    """The Heroku error code of one request ("" when the dyno answered normally)."""
    if record.state in STATE_CODES:
        return STATE_CODES[record.state]
    return TERMINATION_CODES.get(record.termination[:2], "")


class AccessJoiner:
    """Turns HAProxy's access records into RouterAccess records (pure: no I/O).

    `probe_digest` is what HAProxy logs for network-wirer's own uptime probes (the
    base64 SHA-256 of the secret marker, uptime.py): those requests are nobody's traffic,
    so they make no access line and no router metric. A request whose marker is wrong
    is an ordinary request, logged as any other.
    """

    def __init__(self, probe_digest: str = "") -> None:
        self._hosts: dict[str, str] = {}
        self.probe_digest = probe_digest
        self.probes_dropped = 0

    def update(self, routes: Iterable[AppRoute]) -> None:
        """Learn which app each hostname belongs to."""
        self._hosts = apps_by_host(routes)

    def is_probe(self, record: AccessRecord) -> bool:
        """Whether `record` is one of this process's uptime probes."""
        if not self.probe_digest or not record.probe:
            return False
        return hmac.compare_digest(record.probe.encode(), self.probe_digest.encode())

    def record(self, record: AccessRecord) -> RouterAccess | None:
        """The app's access line for `record`, None when no app owns its host."""
        app_id = self._hosts.get(record.host)
        if app_id is None:
            return None
        if self.is_probe(record):
            self.probes_dropped += 1
            return None
        code = error_code(record)
        status = record.status
        if code and record.termination[:1] in ("s", "S", "P") and status in ROUTER_ANSWERS:
            status = 503  # what the client got: the errorfile's status, not HAProxy's code
        connect = max(record.connect_ms, 0)
        return RouterAccess(
            app_id=app_id,
            timestamp=record.timestamp,
            method=record.method,
            path=record.path,
            host=record.host,
            request_id=record.request_id,
            fwd=record.client,
            dyno=dyno_of(record.server) if record.server else "",
            connect_ms=connect,
            service_ms=max(record.active_ms - connect, 0),
            status=status,
            bytes=record.bytes,
            protocol="https" if record.tls else "http",
            code=code,
        )
