"""What the egress guard refuses: address ranges, this host, the platform's ports.

The rules of libs/egress.py, as data and one pure check (`EgressPolicy.refusal`), so
that other parts (the builder's firewall, say) can apply the same ranges.

    refused first   the platform's own (address, port) pairs, whatever is allowed
    then            SLIPWAY_EGRESS_DENY
    allowed         SLIPWAY_EGRESS_ALLOW (every address a v6 address carries must be in it)
    refused         DEFAULT_DENY, and every address of this host's interfaces
    allowed         everything else (the documentation ranges included)

IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo
addresses are judged by the IPv4 addresses they carry as well as by themselves.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import yarl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# (networks, what the customer is told the address is)
DEFAULT_DENY: Final[tuple[tuple[tuple[IPNetwork, ...], str], ...]] = (
    (_nets("127.0.0.0/8", "::1/128"), "a loopback address"),
    (_nets("0.0.0.0/8", "::/128"), "an unspecified address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_nets("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_nets("169.254.0.0/16", "fe80::/10"), "a link-local address"),
    (_nets("224.0.0.0/4", "ff00::/8"), "a multicast address"),
    (_nets("255.255.255.255/32"), "the broadcast address"),
    (_nets("240.0.0.0/4", "100::/64"), "a reserved address"),
    (_nets("192.0.0.0/24"), "an IETF protocol address"),
    (_nets("198.18.0.0/15"), "a benchmarking address"),
    (_nets("fc00::/7", "fec0::/10"), "a private (unique-local) address"),
    # Local-use NAT64 carries an IPv4 address at a prefix length of the operator's
    # choosing, so what it embeds cannot be read back: refused as a whole.
    (_nets("64:ff9b:1::/48"), "a local NAT64 address"),
)

PLATFORM_KIND: Final = "a port of Slipway's own services"
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _this_host_addresses() -> frozenset[IPAddress]:
    """Every address on this host's interfaces, from `ip -j addr` (empty if unreadable)."""
    try:
        listed = subprocess.run(
            ["ip", "-j", "addr"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        interfaces = json.loads(listed)
    except (OSError, subprocess.SubprocessError, ValueError):
        return frozenset()
    found: set[IPAddress] = set()
    for interface in interfaces:
        for info in interface.get("addr_info", []):
            with contextlib.suppress(ValueError, TypeError):
                found.add(strip_scope(ipaddress.ip_address(info["local"])))
    return frozenset(found)


def strip_scope(address: IPAddress) -> IPAddress:
    """The address without an IPv6 zone (`fe80::1%eth0` is judged as `fe80::1`)."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(int(address))
    return address


def _parse_cidrs(setting: str, value: str) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{setting}: {item!r} is not a CIDR; write ranges like 10.1.0.0/16,fd00::/8"
            ) from None
    return tuple(nets)


def _host_port(value: str) -> tuple[str, int] | None:
    """`host:port`, `[v6]:port` or a URL, as a (host, port) pair; None when no port."""
    text = value if "://" in value else f"tcp://{value}"
    try:
        url = yarl.URL(text)
        port = url.explicit_port
    except ValueError:
        return None
    if url.host is None or port is None:
        return None
    return url.host, port


def _platform_from_env(env: Mapping[str, str]) -> set[tuple[str, int]]:
    """The (address, port) pairs the platform's own services listen on, as env names them."""
    pairs: set[tuple[str, int]] = set()
    loopback_ports = {
        "SLIPWAY_NATS_PORT": "4222",
        "SLIPWAY_API_PORT": "5100",
        "SLIPWAY_ROUTER_ADMIN_PORT": "2019",
        "SLIPWAY_ROUTER_HTTP_PORT": "8080",
        "SLIPWAY_ROUTER_HTTPS_PORT": "8443",
    }
    for name, default in loopback_ports.items():
        with contextlib.suppress(ValueError):
            pairs.add(("127.0.0.1", int(env.get(name, default))))
    with contextlib.suppress(ValueError):
        registry_port = int(env.get("SLIPWAY_REGISTRY_PORT", "5000"))
        # An empty host means the registry listens on every address.
        registry_host = env.get("SLIPWAY_REGISTRY_HOST", "127.0.0.1") or "0.0.0.0"  # noqa: S104
        pairs.add((registry_host, registry_port))
    for name in ("SLIPWAY_NATS_URL", "SLIPWAY_API_URL", "SLIPWAY_DOCKER_URL"):
        for item in env.get(name, "").split(","):
            pair = _host_port(item.strip()) if item.strip() else None
            if pair is not None:
                pairs.add(pair)
    for item in env.get("SLIPWAY_EGRESS_PLATFORM", "").split(","):
        if not item.strip():
            continue
        pair = _host_port(item.strip())
        if pair is None:
            raise ValueError(f"SLIPWAY_EGRESS_PLATFORM: {item.strip()!r} is not host:port")
        pairs.add(pair)
    return pairs


def _platform_addresses(pairs: Iterable[tuple[str, int]]) -> frozenset[tuple[IPAddress, int]]:
    """Platform pairs with names resolved (once, at start) to addresses."""
    found: set[tuple[IPAddress, int]] = set()
    for host, port in pairs:
        try:
            found.add((strip_scope(ipaddress.ip_address(host)), port))
            continue
        except ValueError:
            pass
        with contextlib.suppress(OSError, UnicodeError):
            for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                found.add((strip_scope(ipaddress.ip_address(info[4][0])), port))
    return frozenset(found)


@dataclass(frozen=True)
class EgressPolicy:
    """What the platform may connect to on a customer's behalf; see the module docstring."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    platform: frozenset[tuple[str, int]] = frozenset()
    # This host's own interface addresses: refused like loopback unless allowed.
    local: frozenset[IPAddress] = field(default_factory=frozenset)
    # `platform` with names resolved once, here, so a check never blocks on DNS.
    _platform_resolved: frozenset[tuple[IPAddress, int]] = field(
        init=False, repr=False, compare=False, default=frozenset()
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_platform_resolved", _platform_addresses(self.platform))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> EgressPolicy:
        """The policy the operator set, plus this host's addresses and the platform's ports."""
        return cls(
            allow=_parse_cidrs("SLIPWAY_EGRESS_ALLOW", env.get("SLIPWAY_EGRESS_ALLOW", "")),
            deny=_parse_cidrs("SLIPWAY_EGRESS_DENY", env.get("SLIPWAY_EGRESS_DENY", "")),
            platform=frozenset(_platform_from_env(env)),
            local=_this_host_addresses(),
        )

    def with_platform(self, *pairs: tuple[str, int]) -> EgressPolicy:
        """This policy, also refusing the given (address, port) pairs (a service's own)."""
        return replace(self, platform=self.platform | frozenset(pairs))

    def is_this_host(self, address: IPAddress) -> bool:
        """Whether `address` reaches this host: loopback, unspecified, or an interface's."""
        for candidate in (address, *embedded_ipv4(address)):
            if candidate.is_loopback or candidate.is_unspecified or candidate in self.local:
                return True
        return False

    def refusal(self, address: IPAddress, port: int) -> str | None:
        """Why `address:port` is refused ("a loopback address", ...), or None if allowed."""
        address = strip_scope(address)
        if self._is_platform(address, port):
            return PLATFORM_KIND
        candidates = [address, *embedded_ipv4(address)]
        if any(_within(c, self.deny) for c in candidates):
            return "an address the operator refuses"
        if all(_within(c, self.allow) for c in candidates):
            return None
        for candidate in candidates:
            if _within(candidate, self.allow):
                continue
            kind = _default_refusal(candidate, self.local)
            if kind is not None:
                return kind if candidate == address else f"{kind} (it carries {candidate})"
        return None

    def _is_platform(self, address: IPAddress, port: int) -> bool:
        for host, platform_port in self._platform_resolved:
            if platform_port != port:
                continue
            if host == address or (self.is_this_host(host) and self.is_this_host(address)):
                return True
        return False


def _default_refusal(address: IPAddress, local: frozenset[IPAddress]) -> str | None:
    for networks, kind in DEFAULT_DENY:
        if _within(address, networks):
            return kind
    if address in local:
        return "an address of the Slipway host itself"
    return None


def policy_for(
    allow: str = "", deny: str = "", own: tuple[tuple[str, int], ...] = ()
) -> EgressPolicy:
    """The policy for a service's `egress_allow` / `egress_deny` settings (CIDR lists).

    `own` adds the calling service's own (address, port) pairs (a port picked at start).
    The platform's ports and this host's addresses come from the environment; a policy is
    made once per set of inputs, since reading the interfaces runs `ip`.
    """
    platform_env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SLIPWAY_")))
    return _cached_policy(allow, deny, own, platform_env)


@functools.lru_cache(maxsize=32)
def _cached_policy(
    allow: str,
    deny: str,
    own: tuple[tuple[str, int], ...],
    platform_env: tuple[tuple[str, str], ...],
) -> EgressPolicy:
    env = {**dict(platform_env), "SLIPWAY_EGRESS_ALLOW": allow, "SLIPWAY_EGRESS_DENY": deny}
    return EgressPolicy.from_env(env).with_platform(*own)


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)
