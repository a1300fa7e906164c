"""Configuration loads under traffic: no connection is reset (Caddy 2.6 re-binds on each load).

The upstream is a plain HTTP server in this process; clients open a new connection per
request, as browsers behind a NAT or the walkthrough's load loop do, so some of them are
always waiting in the listening socket's queue when a load closes the old socket.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno
from slipway.libs.caddy import CaddyServer, migrate_queued_connections
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routes import RouterOptions, app_routes, caddy_config

pytestmark = [pytest.mark.integration]

HOST = "steady.localhost"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


class _Upstream(http.server.ThreadingHTTPServer):
    # The stdlib's default backlog of 5 drops connections Caddy opens in a burst after a
    # load; the dyno under test here is the router, not this server.
    request_queue_size = 128


@pytest.fixture
def upstream() -> Iterator[int]:
    server = _Upstream(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _load(caddy: CaddyServer, port: int, version: int) -> None:
    """Network-wirer's configuration with one dyno; `version` changes it on every load."""
    app = AppDesired(app_id="steady", app_name="steady", team_id="t")
    dyno = Dyno(
        app_id="steady",
        app_name="steady",
        team_id="t",
        name="web.1",
        process_type="web",
        release_version=version,
        state="up",
        host_id="elsewhere",
        address="127.0.0.1",
        port=port,
    )
    options = RouterOptions(
        address=caddy.address,
        storage_dir=str(caddy.storage_dir),
        upstream_timeout=30.0 + version % 2,  # a different configuration each time
    )
    config = caddy_config(app_routes([app], [dyno], "localhost"), options, load_pages())
    caddy.admin("POST", "/load", config, timeout=30)


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_loads_under_traffic_reset_no_connection(caddy: CaddyServer, upstream: int) -> None:
    """30 loads while three clients keep connecting: every request gets its 200."""
    _load(caddy, upstream, 0)
    assert _get(caddy.address.http_port) == 200
    outcomes: list[object] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                outcomes.append(_get(caddy.address.http_port))
            except OSError as exc:
                outcomes.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        for version in range(1, 31):
            _load(caddy, upstream, version)
    finally:
        stop.set()
        for thread in clients:
            thread.join(15)
    failed = [o for o in outcomes if o != 200]
    assert len(outcomes) > 100 and not failed, (len(outcomes), failed[:5])


def test_the_sysctl_is_switched_on_where_it_can_be(tmp_path: Path) -> None:
    knob = tmp_path / "tcp_migrate_req"
    knob.write_text("0\n")
    assert migrate_queued_connections(knob) and knob.read_text() == "1\n"
    assert not migrate_queued_connections(tmp_path / "missing" / "knob")
