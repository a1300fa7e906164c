"""routes.py, the route states and tls.py's names without servers."""

from __future__ import annotations

from typing import Any

import msgspec

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno, DynoState
from slipway.services.network_wirer.haproxy.config import State
from slipway.services.network_wirer.haproxy.reconcile import route_state
from slipway.services.network_wirer.networks import isolation_rules
from slipway.services.network_wirer.routes import AppRoute, Upstream, app_routes, apps_by_host
from slipway.services.network_wirer.tls import app_file, covered_by, default_names


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
    """No web dyno is H14; web dynos that all crashed are H10; a running one is up."""
    routes = app_routes(
        [_app("none"), _app("dead"), _app("live")],
        [_dyno("dead", "web.1", "crashed"), _dyno("live", "web.1")],
        "localhost",
    )
    assert [route_state(r) for r in routes] == [State.CRASHED, State.UP, State.NO_WEB]


def test_maintenance_wins_over_running_dynos() -> None:
    """Maintenance answers its own page even while dynos run."""
    [route] = app_routes([_app("a", maintenance=True)], [_dyno("a", "web.1")], "localhost")
    assert route.upstreams
    assert route_state(route) == State.MAINTENANCE


def test_every_host_names_its_app_for_access_lines() -> None:
    """The access line of any of an app's hosts is the app's."""
    routes = [AppRoute("id-a", "a", ("a.localhost", "www.a.test")), AppRoute("id-b", "b", ())]
    assert apps_by_host(routes) == {"a.localhost": "id-a", "www.a.test": "id-a"}


def test_default_certificate_covers_apps_only_under_a_two_label_base() -> None:
    """`*.apps.example.com` serves every app there; `*.localhost` is never issued."""
    wide = default_names("apps.example.com")
    assert wide == ["apps.example.com", "*.apps.example.com"]
    assert covered_by("shop.apps.example.com", wide)
    assert not covered_by("a.shop.apps.example.com", wide)
    assert not covered_by("shop.apps.example.com.evil.test", wide)
    narrow = default_names("localhost")
    assert narrow == ["router.localhost"]
    assert not covered_by("shop.localhost", narrow)


def test_app_certificate_file_names_are_digests() -> None:
    """An app id never becomes a path: its certificate's file is a fixed-shape digest."""
    name = app_file("../../etc/passwd")
    assert name.startswith("app-") and name.endswith(".pem") and "/" not in name
    assert len(name) == len("app-.pem") + 32
    assert app_file("id-a") != app_file("id-b")


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
