"""The certificates a router reports to the monitor (inventory.py): whose, which, in order."""

from __future__ import annotations

import datetime
from pathlib import Path

from slipway.services.network_wirer.ca import RouterCA
from slipway.services.network_wirer.haproxy.config import HAProxyOptions
from slipway.services.network_wirer.inventory import served
from slipway.services.network_wirer.routes import AppRoute
from slipway.services.network_wirer.tls import Held, RouterCertificates, app_file

NOW = datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC)


def _route(app_id: str, name: str, *domains: str) -> AppRoute:
    return AppRoute(app_id=app_id, app_name=name, hosts=(f"{name}.localhost", *domains))


def _internal(tmp_path: Path, days: int) -> RouterCertificates:
    options = HAProxyOptions(data_dir=tmp_path / "haproxy")
    ca = RouterCA.load_or_create(tmp_path / "state")
    certificates = RouterCertificates(ca, options, "localhost", valid=datetime.timedelta(days=days))
    certificates.ensure_default()
    return certificates


def test_internal_certificates_name_their_app_custom_domains_first(tmp_path: Path) -> None:
    """Each app's certificate carries its app id and name; the default has none; the
    soonest to end comes first."""
    internal = _internal(tmp_path, days=12)
    shop = _route("app-shop", "shop", "www.shop.test")
    blog = _route("app-blog", "blog")
    internal.held[app_file(shop.app_id)] = Held(
        frozenset(shop.hosts), NOW + datetime.timedelta(days=3)
    )
    internal.held[app_file(blog.app_id)] = Held(
        frozenset(blog.hosts), NOW + datetime.timedelta(days=40)
    )
    found = served([blog, shop], internal)
    assert [(c.hostnames, c.app_id, c.app_name, c.issuer) for c in found] == [
        (["www.shop.test", "shop.localhost"], "app-shop", "shop", "internal"),
        (["router.localhost"], "", "", "internal"),  # the default: 12 days from today
        (["blog.localhost"], "app-blog", "blog", "internal"),
    ]
    default = internal.default()
    assert default is not None
    assert found[1].not_after == default.not_after.timestamp()
    life = default.not_after - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=11) < life <= datetime.timedelta(days=12)


def test_acme_certificates_of_domains_no_longer_routed_are_left_out(tmp_path: Path) -> None:
    """ACME keeps a removed domain's file until its next pass; nobody is served it."""
    shop = _route("app-shop", "shop", "www.shop.test")
    expiry = {
        "www.shop.test": NOW + datetime.timedelta(days=20),
        "old.shop.test": NOW + datetime.timedelta(days=1),
    }
    found = served([shop], None, expiry)
    assert [(c.hostnames, c.app_id, c.issuer) for c in found] == [
        (["www.shop.test"], "app-shop", "acme")
    ]
    assert found[0].not_after == expiry["www.shop.test"].timestamp()


def test_an_app_without_a_certificate_of_its_own_is_not_listed(tmp_path: Path) -> None:
    """Nothing issued for an app (the default serves it): only the default is listed."""
    found = served([_route("app-shop", "shop")], _internal(tmp_path, days=30))
    assert [c.hostnames for c in found] == [["router.localhost"]]
