"""The egress policy's rules, as a pure check: ranges, carried IPv4, settings, platform pairs."""

from __future__ import annotations

import ipaddress

import pytest

from slipway.libs.egress import EgressPolicy, embedded_ipv4


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


NO_LOCAL = EgressPolicy()


@pytest.mark.parametrize("address", ["8.8.8.8", "203.0.113.5", "192.0.2.10", "2606:4700::1111"])
def test_public_and_documentation_addresses_are_allowed_by_default(address: str) -> None:
    """Public addresses and the documentation ranges (registries live there) pass."""
    assert NO_LOCAL.refusal(_ip(address), 443) is None


def test_a_teredo_address_is_judged_by_the_ipv4_client_it_carries() -> None:
    """2001:0:808:808::f5ff:fffe carries client 10.0.0.1 (inverted): refused as private."""
    teredo = _ip("2001:0:808:808:0:0:f5ff:fffe")
    assert ipaddress.IPv4Address("10.0.0.1") in embedded_ipv4(teredo)
    assert NO_LOCAL.refusal(teredo, 443) == "a private address (it carries 10.0.0.1)"


def test_a_scoped_link_local_address_is_refused() -> None:
    """`fe80::1%eth0` is judged without its zone."""
    assert NO_LOCAL.refusal(_ip("fe80::1%eth0"), 80) == "a link-local address"


def test_an_allowed_range_must_cover_every_address_carried() -> None:
    """Allowing 127.0.0.1/32 does not allow a mapped 10.0.0.1."""
    policy = EgressPolicy.from_env({"SLIPWAY_EGRESS_ALLOW": "127.0.0.1/32"})
    assert policy.refusal(_ip("::ffff:127.0.0.1"), 9999) is None
    assert policy.refusal(_ip("::ffff:10.0.0.1"), 9999) == "a private address (it carries 10.0.0.1)"


def test_a_platform_service_on_every_address_refuses_its_port_on_any_local_address() -> None:
    """A service bound to 0.0.0.0:5000 is refused at 127.0.0.1, ::1 and this host's addresses."""
    policy = EgressPolicy(
        allow=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
        platform=frozenset({("0.0.0.0", 5000)}),  # noqa: S104 - a listener on every address
        local=frozenset({_ip("192.0.2.2")}),
    )
    for address in ("127.0.0.1", "::1", "192.0.2.2"):
        assert policy.refusal(_ip(address), 5000) == "a port of Slipway's own services"
    assert policy.refusal(_ip("192.0.2.2"), 5001) is None
    assert policy.refusal(_ip("198.51.100.7"), 5000) is None


@pytest.mark.parametrize("setting", ["SLIPWAY_EGRESS_ALLOW", "SLIPWAY_EGRESS_DENY"])
def test_a_setting_that_is_not_a_cidr_list_names_itself(setting: str) -> None:
    """A typo in an operator setting stops the start with the setting's name and an example."""
    with pytest.raises(ValueError, match=f"{setting}: 'ten.0.0.0/8' is not a CIDR"):
        EgressPolicy.from_env({setting: "127.0.0.1/32, ten.0.0.0/8"})


def test_an_operator_deny_wins_over_an_allow() -> None:
    """A range both allowed and denied is refused."""
    policy = EgressPolicy.from_env(
        {"SLIPWAY_EGRESS_ALLOW": "10.0.0.0/8", "SLIPWAY_EGRESS_DENY": "10.9.0.0/16"}
    )
    assert policy.refusal(_ip("10.1.0.1"), 443) is None
    assert policy.refusal(_ip("10.9.0.1"), 443) == "an address the operator refuses"
