"""The build network's firewall: builds reach the internet, never the platform or private ranges.

Build containers (buildpack builds, buildpack fetches, Dockerfile RUN steps) run
customer code on the builders' bridge network. Two chains per build network,
named from a hash of its name (a test's own network never touches the chains of
`slipway-builds`), rebuilt atomically with `iptables-restore --noflush`:

    SLIPWAY-BIN-<h>   jumped to first from INPUT for the bridge: only replies
                      (ESTABLISHED,RELATED), DNS to a resolver on the host and host
                      addresses in SLIPWAY_EGRESS_ALLOW pass. No other host port,
                      host address or platform service answers a build (a
                      container's loopback is its own).
    SLIPWAY-BFW-<h>   jumped to first from DOCKER-USER (which Docker evaluates first
                      in FORWARD) for the bridge: replies, and DNS to the host's
                      resolvers (port 53 only: Docker's embedded DNS forwards a
                      build's lookups from its namespace) pass; the host's own
                      addresses and SLIPWAY_EGRESS_DENY are refused;
                      SLIPWAY_EGRESS_ALLOW passes; then the egress guard's default
                      deny (libs/egress.py: loopback, private, shared, link-local
                      incl. 169.254.169.254, multicast, reserved, benchmarking...)
                      is refused; the rest (package registries, the default route)
                      passes.

Refused packets are rejected rather than dropped, so a build fails at once
("No route to host") instead of waiting for a timeout. IPv4 only: the build
network has no IPv6. The rules stay when the builder stops (other builders on
the host may share the network); `remove` is for tests and uninstall, and each
`apply` prunes the chains of build networks whose bridge no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import aiodocker
import structlog

from slipway.libs.egress import DEFAULT_DENY, EgressPolicy
from slipway.services.builder.errors import BuildError

log = structlog.get_logger("slipway.builder.firewall")

_REJECT = "-j REJECT --reject-with icmp-host-prohibited"
_PREFIXES = ("SLIPWAY-BIN-", "SLIPWAY-BFW-")
# Where the host's resolvers are listed (the second one when systemd-resolved is in front).
RESOLV_CONF = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


class FirewallError(BuildError):
    """iptables refused the build network's rules (not root, or no iptables)."""

    code = "build_firewall_failed"


def chain_names(network: str) -> tuple[str, str]:
    """The INPUT and FORWARD chains of one build network (iptables names: at most 28 chars)."""
    digest = hashlib.sha256(network.encode()).hexdigest()[:10]
    return f"SLIPWAY-BIN-{digest}", f"SLIPWAY-BFW-{digest}"


def bridge_of(network: dict[str, object]) -> str:
    """The Linux bridge interface of a Docker bridge network."""
    options = network.get("Options") or {}
    name = options.get("com.docker.network.bridge.name") if isinstance(options, dict) else None
    return str(name) if name else f"br-{str(network['Id'])[:12]}"


def resolvers(paths: Iterable[str] = RESOLV_CONF) -> list[str]:
    """The host's IPv4 DNS servers (Docker's embedded DNS forwards a build's lookups there)."""
    found: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    with contextlib.suppress(ValueError):
                        address = ipaddress.ip_address(words[1])
                        if address.version == 4 and not address.is_loopback:
                            found.append(str(address))
    return sorted(set(found))


def _dns(chain: str, servers: Iterable[str]) -> list[str]:
    return [
        f"-A {chain} -d {server}/32 -p {protocol} --dport 53 -j RETURN"
        for server in servers
        for protocol in ("udp", "tcp")
    ]


def firewall_rules(network: str, policy: EgressPolicy, dns: Iterable[str] = ()) -> list[str]:
    """Both chains' rules, in iptables-restore syntax (pure: tested without iptables).

    `dns`: the host's resolvers, reachable on port 53 only (often a private address).
    """
    inbound, forward = chain_names(network)
    dns = list(dns)
    rules = [f"-A {inbound} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"]
    rules += _dns(inbound, dns)
    rules += [f"-A {inbound} -d {net} {_REJECT}" for net in _v4(policy.deny)]
    rules += [f"-A {inbound} -d {net} -j RETURN" for net in _v4(policy.allow)]
    rules += [
        f"-A {inbound} {_REJECT}",
        f"-A {forward} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
    ]
    rules += _dns(forward, dns)
    host = sorted(str(a) for a in policy.local if a.version == 4 and not a.is_loopback)
    rules += [f"-A {forward} -d {address}/32 {_REJECT}" for address in host]
    rules += [f"-A {forward} -d {net} {_REJECT}" for net in _v4(policy.deny)]
    rules += [f"-A {forward} -d {net} -j RETURN" for net in _v4(policy.allow)]
    defaults = [net for networks, _ in DEFAULT_DENY for net in networks]
    rules += [f"-A {forward} -d {net} {_REJECT}" for net in _v4(defaults)]
    rules.append(f"-A {forward} -j RETURN")
    return rules


def _v4(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    return [str(net) for net in networks if net.version == 4]


class BuildFirewall:
    """The two chains of one build network and the jumps to them (iptables, as root)."""

    def __init__(self, network: str, policy: EgressPolicy) -> None:
        self.network = network
        self.policy = policy
        self.inbound, self.forward = chain_names(network)

    async def apply(self, docker: aiodocker.Docker) -> str:
        """Make the chains hold exactly today's rules and jump to them; return the bridge."""
        found = await docker.networks.get(self.network)
        bridge = bridge_of(await found.show())
        rules = firewall_rules(self.network, self.policy, await asyncio.to_thread(resolvers))
        # Declaring a chain in a --noflush restore empties and refills it atomically.
        script = "\n".join(
            [
                "*filter",
                f":{self.inbound} - [0:0]",
                f":{self.forward} - [0:0]",
                *rules,
                "COMMIT",
                "",
            ]
        )
        await _iptables("iptables-restore", "--noflush", stdin=script.encode())
        await prune_stale()
        await self._jump("INPUT", bridge, self.inbound)
        await self._jump("DOCKER-USER", bridge, self.forward)
        log.info("build_firewall.applied", network=self.network, bridge=bridge, rules=len(rules))
        return bridge

    async def _jump(self, parent: str, bridge: str, chain: str) -> None:
        """`parent` jumps to `chain` first for `bridge`; jumps for an old bridge go."""
        for stale in await self._jumps(parent, chain):
            if stale != ["-i", bridge]:
                await _iptables("iptables", "-D", parent, *stale, "-j", chain)
        if await _iptables("iptables", "-C", parent, "-i", bridge, "-j", chain, check=False):
            await _iptables("iptables", "-I", parent, "1", "-i", bridge, "-j", chain)

    async def _jumps(self, parent: str, chain: str) -> list[list[str]]:
        listing = await _iptables_output("iptables", "-S", parent)
        jumps = []
        for line in listing.splitlines():
            words = line.split()
            if words[-2:] == ["-j", chain] and words[:2] == ["-A", parent]:
                jumps.append(words[2:-2])
        return jumps

    async def remove(self) -> None:
        """Take the jumps and both chains away (a test's network, or an uninstall)."""
        for parent, chain in (("INPUT", self.inbound), ("DOCKER-USER", self.forward)):
            for jump in await self._jumps(parent, chain):
                await _iptables("iptables", "-D", parent, *jump, "-j", chain, check=False)
            await _iptables("iptables", "-F", chain, check=False)
            await _iptables("iptables", "-X", chain, check=False)


async def prune_stale() -> int:
    """Remove the chains of build networks whose bridge is gone (a deleted network's)."""
    pruned = 0
    interfaces = set(await asyncio.to_thread(os.listdir, "/sys/class/net"))
    for parent in ("INPUT", "DOCKER-USER"):
        for line in (await _iptables_output("iptables", "-S", parent)).splitlines():
            words = line.split()
            chain = words[-1] if words[-2:-1] == ["-j"] else ""
            if not chain.startswith(_PREFIXES) or "-i" not in words:
                continue
            bridge = words[words.index("-i") + 1]
            if bridge in interfaces:
                continue
            await _iptables("iptables", "-D", *words[1:], check=False)
            await _iptables("iptables", "-F", chain, check=False)
            await _iptables("iptables", "-X", chain, check=False)
            pruned += 1
    return pruned


async def _iptables(*argv: str, stdin: bytes | None = None, check: bool = True) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(stdin)
    if process.returncode and check:
        raise FirewallError(
            f"the build network's firewall could not be set ({' '.join(argv[:3])}):"
            f" {err.decode(errors='replace').strip()}; the builder must run as root"
            " (or set SLIPWAY_BUILD_FIREWALL=false where builds run trusted code)"
        )
    return process.returncode or 0


async def _iptables_output(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await process.communicate()
    return out.decode(errors="replace")
