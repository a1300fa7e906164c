"""routes.py and access.py without servers: desired state → Caddy JSON, log records → access."""

from __future__ import annotations

from typing import Any

import msgspec

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno, DynoState
from slipway.libs.caddy import HTTP_SERVER, HTTPS_SERVER, RouterAddress
from slipway.services.network_wirer.access import AccessJoiner
from slipway.services.network_wirer.networks import isolation_rules
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routes import (
    AppRoute,
    RouterOptions,
    Upstream,
    app_routes,
    caddy_config,
)

ADDRESS = RouterAddress(admin_socket="/run/slipway/caddy/admin/admin.sock")
ACCESS_LOG = "unix//run/slipway/network-wirer/run/access.sock"
OPTIONS = RouterOptions(address=ADDRESS, storage_dir="/s", access_log=ACCESS_LOG)


def _app(name: str, **kw: Any) -> AppDesired:
    return AppDesired(app_id=f"id-{name}", app_name=name, team_id="t", **kw)


def _dyno(app: str, name: str, state: DynoState = "up", port: int | None = 5000) -> Dyno:
    return Dyno(
        app_id=f"id-{app}",
        app_name=app,
        team_id="t",
        name=name,
        process_type=name.split(".")[0],
        release_version=1,
        state=state,
        host_id="h",
        address="10.0.0.1",
        port=port,
    )


def _answer(config: dict[str, Any], server: str, app_id: str) -> dict[str, Any]:
    routes = config["apps"]["http"]["servers"][server]["routes"]
    [route] = [r for r in routes if r.get("@id", "").startswith(f"app-{app_id}-")]
    answer: dict[str, Any] = route["handle"][0]["routes"][-1]["handle"][-1]
    return answer


def test_only_up_web_dynos_with_an_address_become_upstreams() -> None:
    """Workers, starting, crashed and unpublished dynos are not routed to."""
    dynos = [
        _dyno("a", "web.2", port=5002),
        _dyno("a", "web.1", port=5001),
        _dyno("a", "web.3", "starting"),
        _dyno("a", "web.4", "crashed"),
        _dyno("a", "web.5", port=None),
        _dyno("a", "worker.1"),
    ]
    [route] = app_routes([_app("a")], dynos, "localhost")
    assert route.upstreams == (
        Upstream("web.1", "10.0.0.1:5001"),
        Upstream("web.2", "10.0.0.1:5002"),
    )
    assert route.hosts == ("a.localhost",)
    assert not route.crashed


def test_dynos_beside_the_router_are_dialled_on_their_app_network() -> None:
    """On the router's own host a dyno is dialled at its app-network address and $PORT;
    on another host, or without that address, at its host's published port."""
    beside = msgspec.structs.replace(
        _dyno("a", "web.1", port=32768), private_address="10.210.3.2", private_port=5000
    )
    elsewhere = msgspec.structs.replace(
        _dyno("a", "web.2", port=32769),
        host_id="other",
        private_address="10.210.3.3",
        private_port=5000,
    )
    unknown = _dyno("a", "web.3", port=32770)  # adopted before the scheduler knew its address
    [route] = app_routes([_app("a")], [beside, elsewhere, unknown], "localhost", "h")
    assert route.upstreams == (
        Upstream("web.1", "10.210.3.2:5000"),
        Upstream("web.2", "10.0.0.1:32769"),
        Upstream("web.3", "10.0.0.1:32770"),
    )
    [route] = app_routes([_app("a")], [beside], "localhost", "")  # turned off
    assert route.upstreams == (Upstream("web.1", "10.0.0.1:32768"),)


def test_custom_domains_join_the_default_hostname() -> None:
    """An app answers on <app>.<base> and on each custom domain, lowercased, once."""
    [route] = app_routes([_app("Shop", domains=["WWW.Shop.Example"])], [], "apps.example")
    assert route.hosts == ("shop.apps.example", "www.shop.example")


def test_h14_without_dynos_and_h10_when_all_crashed() -> None:
    """No web dyno answers H14; web dynos that all crashed answer H10; both 503."""
    routes = app_routes(
        [_app("none"), _app("dead")], [_dyno("dead", "web.1", "crashed")], "localhost"
    )
    config = caddy_config(routes, OPTIONS, load_pages())
    none, dead = (_answer(config, HTTP_SERVER, f"id-{n}") for n in ("none", "dead"))
    assert (none["status_code"], none["headers"]["X-Router-Error"]) == (503, ["H14"])
    assert (dead["status_code"], dead["headers"]["X-Router-Error"]) == (503, ["H10"])


def test_maintenance_wins_over_running_dynos() -> None:
    """Maintenance answers its own page even while dynos run."""
    routes = app_routes([_app("a", maintenance=True)], [_dyno("a", "web.1")], "localhost")
    answer = _answer(caddy_config(routes, OPTIONS, load_pages()), HTTPS_SERVER, "id-a")
    assert answer["status_code"] == 503
    assert "maintenance" in answer["body"]


def test_proxy_balances_retries_and_checks_health() -> None:
    """Round robin, a retry window, passive health only, H12's timeout, X-Forwarded-Port."""
    route = AppRoute("id", "a", ("a.localhost",), (Upstream("web.1", "h:1"),))
    config = caddy_config([route], OPTIONS, load_pages())
    proxy = _answer(config, HTTP_SERVER, "id")
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["upstreams"] == [{"dial": "h:1"}]
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
    assert proxy["load_balancing"]["try_duration"] == "5000ms"
    assert proxy["health_checks"]["passive"]["max_fails"] == 1
    # No request of the router's own reaches the app unless an operator asks for one.
    assert "active" not in proxy["health_checks"]
    assert proxy["transport"]["response_header_timeout"] == "30000ms"
    assert proxy["headers"]["request"]["set"]["X-Forwarded-Port"] == ["8080"]
    https = _answer(config, HTTPS_SERVER, "id")
    assert https["headers"]["request"]["set"]["X-Forwarded-Port"] == ["8443"]


def test_an_operator_set_health_path_turns_active_checks_on() -> None:
    """SLIPWAY_ROUTER_HEALTH_PATH=/up: Caddy GETs it at the interval, passive health kept."""
    route = AppRoute("id", "a", ("a.localhost",), (Upstream("web.1", "h:1"),))
    options = RouterOptions(address=ADDRESS, health_path="/up", health_interval=2.0)
    checks = _answer(caddy_config([route], options, load_pages()), HTTP_SERVER, "id")[
        "health_checks"
    ]
    assert checks["active"] == {"uri": "/up", "interval": "2000ms", "timeout": "2000ms"}
    assert checks["passive"]["max_fails"] == 1


def test_unknown_hosts_get_404_and_admin_stays_on_its_socket() -> None:
    """The last route answers 404; admin, storage and trust come from the boot skeleton."""
    config = caddy_config([], OPTIONS, load_pages())
    last = config["apps"]["http"]["servers"][HTTP_SERVER]["routes"][-1]
    assert last["handle"][0]["status_code"] == 404
    assert config["admin"]["listen"] == "unix//run/slipway/caddy/admin/admin.sock"
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    assert config["apps"]["http"]["servers"][HTTP_SERVER]["automatic_https"] == {"disable": True}
    issuers = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuers == [{"module": "internal"}]


def test_acme_is_a_setting_away() -> None:
    """A real deployment switches the issuer to ACME with its account email."""
    options = RouterOptions(address=ADDRESS, tls_issuer="acme", acme_email="ops@example.com")
    config = caddy_config([], options, load_pages())
    issuers = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuers == [{"module": "acme", "email": "ops@example.com"}]
    assert "logging" not in config


def _access(
    rid: str, host: str, user_id: str = "", extra: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "logger": "http.log.access.router",
        "ts": 1.5,
        "request": {"remote_ip": "1.2.3.4", "method": "GET", "host": host, "uri": "/x?y"},
        "user_id": user_id,
        "duration": 0.0123,
        "size": 42,
        "status": 200,
        "resp_headers": {"X-Request-Id": [rid], **(extra or {})},
    }


def test_each_upstream_is_mapped_to_its_dyno_for_the_access_line() -> None:
    """A `map` before the proxy names the dyno in the access log's user_id; no proxy logger."""
    route = AppRoute(
        "id", "a", ("a.localhost",), (Upstream("web.1", "h:1"), Upstream("web.2", "h:2"))
    )
    config = caddy_config(
        [route], RouterOptions(address=ADDRESS, access_log=ACCESS_LOG), load_pages()
    )
    routes = config["apps"]["http"]["servers"][HTTP_SERVER]["routes"]
    [app] = [r for r in routes if r.get("@id") == "app-id-http"]
    naming, proxy = app["handle"][0]["routes"][-1]["handle"]
    assert proxy["handler"] == "reverse_proxy"
    assert naming["handler"] == "map"
    assert naming["destinations"] == ["{http.auth.user.id}"]
    assert [(m["input"], m["outputs"]) for m in naming["mappings"]] == [
        ("h:1", ["web.1"]),
        ("h:2", ["web.2"]),
    ]
    logs = config["logging"]["logs"]
    assert logs["router"]["include"] == ["http.log.access.router"]
    assert logs["router"]["writer"] == {"output": "net", "address": ACCESS_LOG}
    assert "http.handlers.reverse_proxy" in logs["default"]["exclude"]


def test_access_lines_name_their_dyno_and_app() -> None:
    """user_id names the dyno; the access line gives the rest; unknown hosts are dropped."""
    joiner = AccessJoiner()
    joiner.update([AppRoute("id", "a", ("a.localhost",), (Upstream("web.3", "h:7"),))])
    access = joiner.record(_access("r1", "a.localhost:8080", user_id="web.3"))
    assert access is not None
    assert (access.app_id, access.dyno, access.request_id) == ("id", "web.3", "r1")
    assert (access.method, access.path, access.fwd) == ("GET", "/x?y", "1.2.3.4")
    assert (access.status, access.bytes, access.service_ms) == (200, 42, 12)
    assert joiner.record(_access("r2", "other.localhost")) is None


def test_router_answers_carry_their_code() -> None:
    """A page the router answered itself names its Heroku code and no dyno."""
    joiner = AccessJoiner()
    joiner.update([AppRoute("id", "a", ("a.localhost",))])
    access = joiner.record(_access("r9", "a.localhost", extra={"X-Router-Error": ["H14"]}))
    assert access is not None
    assert (access.code, access.dyno) == ("H14", "")


def test_isolation_rules_let_only_router_ports_in() -> None:
    """Per bridge: replies pass, the router's ports pass, everything else is dropped."""
    rules = isolation_rules(["slwb", "slwa"], [8443, 8080])
    assert rules == [
        "-A SLIPWAY-ISOLATION -i slwa -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        "-A SLIPWAY-ISOLATION -i slwa -p tcp -m multiport --dports 8080,8443 -j RETURN",
        "-A SLIPWAY-ISOLATION -i slwa -j DROP",
        "-A SLIPWAY-ISOLATION -i slwb -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        "-A SLIPWAY-ISOLATION -i slwb -p tcp -m multiport --dports 8080,8443 -j RETURN",
        "-A SLIPWAY-ISOLATION -i slwb -j DROP",
    ]
