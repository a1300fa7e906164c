"""The pure parts: layout, plan, rendered configuration, access lines and error codes."""

from __future__ import annotations

import subprocess
from base64 import b64encode
from pathlib import Path

import pytest

from slipway.libs.haproxy import AccessRecord, ServerState, haproxy_binary, parse_access
from slipway.services.network_wirer.haproxy.access import AccessJoiner, error_code
from slipway.services.network_wirer.haproxy.config import (
    HAProxyOptions,
    Layout,
    Server,
    dyno_of,
    render,
    server_name,
)
from slipway.services.network_wirer.haproxy.reconcile import (
    Running,
    desired_layout,
    plan_changes,
    write_files,
)
from slipway.services.network_wirer.pages import load
from slipway.services.network_wirer.routes import Upstream
from tests.network_wirer.haproxy.conftest import route, self_signed_pem

WEB1 = Upstream("web.1", "127.0.0.1:5001")
WEB2 = Upstream("web.2", "127.0.0.1:5002")


def test_apps_keep_their_backends_and_new_ones_take_free_ones() -> None:
    """An app already in the map keeps its backend; a new app gets one nobody uses."""
    running = Running(
        pool_size=4,
        hosts={"b.localhost": "be_2:up", "gone.localhost": "be_0:up"},
        servers=(ServerState("be_1", "web.1--x", "127.0.0.1", 9, 1, 1),),
    )
    layout = desired_layout([route("a", WEB1), route("b", WEB2)], running)
    assert layout.pool_size == 4
    # be_0 is still pointed at by a removed app's host, be_1 still drains a server.
    assert layout.hosts == {"a.localhost": "be_3:up", "b.localhost": "be_2:up"}
    assert layout.servers["be_2"] == {Server(server_name("web.2", WEB2.dial), WEB2.dial)}


def test_pool_grows_when_no_backend_is_free() -> None:
    """More new apps than free backends: a bigger pool, every app placed once."""
    layout = desired_layout([route(f"a{i}") for i in range(5)], Running(pool_size=2, hosts={}))
    assert layout.pool_size >= 5
    backends = [value.split(":")[0] for value in layout.hosts.values()]
    assert len(set(backends)) == 5


def test_route_states_in_the_map() -> None:
    """Maintenance wins over dynos; no dyno is h14, crashed dynos h10."""
    layout = desired_layout(
        [
            route("m", WEB1, maintenance=True),
            route("u", WEB1),
            route("n"),
            route("c", crashed=True),
        ],
        Running(pool_size=4, hosts={}),
    )
    states = {host: value.split(":")[1] for host, value in layout.hosts.items()}
    assert states == {
        "m.localhost": "maint",
        "u.localhost": "up",
        "n.localhost": "h14",
        "c.localhost": "h10",
    }


def test_hostile_hosts_never_reach_the_map() -> None:
    """A host with a space or a newline would split a runtime command: it is left out."""
    layout = desired_layout(
        [route("ok", hosts=("evil.test be_0:up", "x\nset map", "Fine.Example.TEST"))],
        Running(pool_size=1, hosts={}),
    )
    assert set(layout.hosts) == {"ok.localhost", "fine.example.test"}


def test_plan_adds_before_routing_and_removes_what_is_gone() -> None:
    """New servers are added, changed hosts set, stale ones deleted, old servers removed."""
    old = ServerState("be_0", server_name("web.1", "127.0.0.1:4000"), "127.0.0.1", 4000, 0)
    paused = ServerState("be_0", server_name("web.2", WEB2.dial), "127.0.0.1", 5002, 1)
    running = Running(
        pool_size=2,
        hosts={"a.localhost": "be_0:h14", "stale.localhost": "be_1:up"},
        servers=(old, paused),
    )
    layout = desired_layout([route("a", WEB1, WEB2, hosts=("new.test",))], running)
    plan = plan_changes(layout, running)
    assert plan.add_servers == (("be_0", Server(server_name("web.1", WEB1.dial), WEB1.dial)),)
    assert plan.ready_servers == (("be_0", paused.name),)
    assert plan.map_add == (("new.test", "be_0:up"),)
    assert plan.map_set == (("a.localhost", "be_0:up"),)
    assert plan.map_del == ("stale.localhost",)
    assert plan.remove == (("be_0", old.name),)
    assert plan_changes(layout, Running(2, layout.hosts, _states(layout))).empty


def _states(layout: Layout) -> tuple[ServerState, ...]:
    return tuple(
        ServerState(backend, s.name, s.dial.split(":")[0], int(s.dial.split(":")[1]), 0)
        for backend, group in layout.servers.items()
        for s in group
    )


def test_server_names_are_safe_and_give_the_dyno_back() -> None:
    """Names are HAProxy-safe, differ per address, and name their dyno."""
    first, moved = server_name("web.1", "127.0.0.1:1"), server_name("web.1", "127.0.0.1:2")
    assert first != moved
    assert dyno_of(first) == "web.1"
    assert server_name("we b/1", "x:1").startswith("we_b_1--")


def test_rendered_configuration_is_valid_and_has_no_tcp_admin(tmp_path: Path) -> None:
    """`haproxy -c` accepts the file; the runtime API is a 0600 unix socket only."""
    try:
        binary = haproxy_binary()
    except FileNotFoundError:
        pytest.skip("haproxy is not installed")
    options = HAProxyOptions(data_dir=tmp_path)
    options.default_certificate.parent.mkdir(parents=True)
    options.default_certificate.write_bytes(self_signed_pem("localhost"))
    layout = desired_layout([route("a", WEB1, WEB2)], Running(pool_size=3, hosts={}))
    write_files(layout, options, load())
    checked = subprocess.run(
        [binary, "-c", "-f", str(options.paths.config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    text = render(layout, options)
    stats = [line.strip() for line in text.splitlines() if line.strip().startswith("stats ")]
    assert stats[0].startswith(f"stats socket {options.paths.runtime_socket} mode 600")
    assert not any("ipv4@" in line or "stats uri" in line for line in text.splitlines())
    assert options.map_path.read_text() == "a.localhost be_0:up\n"


def _record(**fields: object) -> AccessRecord:
    base: dict[str, object] = {
        "timestamp": 1.5,
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/",
        "host": "a.localhost",
        "request_id": "r" * 20,
        "state": "up",
        "backend": "be_0",
        "server": "web.1--abc",
        "connect_ms": 1,
        "response_ms": 5,
        "active_ms": 9,
        "status": 200,
        "bytes": 100,
        "termination": "--",
        "tls": False,
    }
    return AccessRecord(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "code", "status"),
    [
        ({}, "", 200),
        ({"state": "maint", "status": 503, "server": ""}, "H80", 503),
        ({"state": "h14", "status": 503, "server": ""}, "H14", 503),
        ({"termination": "SC", "status": 503}, "H10", 503),
        ({"termination": "sH", "status": 504}, "H12", 503),
        ({"termination": "SH", "status": 502}, "H13", 503),
        ({"termination": "SD", "status": 200}, "H18", 200),
        ({"termination": "cD", "status": 200}, "H15", 200),
        ({"termination": "--", "status": 502}, "", 502),  # the dyno's own 502
    ],
)
def test_error_codes_and_statuses(fields: dict[str, object], code: str, status: int) -> None:
    """Route states and termination flags become Heroku's codes; HAProxy's own 5xx are 503."""
    joiner = AccessJoiner()
    joiner.update([route("a")])
    access = joiner.record(_record(**fields))
    assert access is not None
    assert (access.code, access.status) == (code, status)
    assert error_code(_record(**fields)) == code


def test_access_line_round_trip_and_unknown_host() -> None:
    """A line in ACCESS_LOG_FORMAT decodes; a host no app owns gives no record."""
    path, host, rid = (b64encode(v.encode()).decode() for v in ("/x?q=1", "a.localhost", "r" * 20))
    line = (
        f"slipway-access 1796303522.125 10.0.0.1 POST {path} {host} {rid}"
        " up be_0 web.2--ab 0 12 15 201 77 ---- 1"
    ).encode()
    record = parse_access(line)
    assert record is not None
    assert (record.path, record.host, record.request_id) == ("/x?q=1", "a.localhost", "r" * 20)
    joiner = AccessJoiner()
    joiner.update([route("a")])
    access = joiner.record(record)
    assert access is not None
    assert (access.dyno, access.connect_ms, access.service_ms, access.protocol) == (
        "web.2",
        0,
        15,
        "https",
    )
    joiner.update([route("b")])
    assert joiner.record(record) is None
