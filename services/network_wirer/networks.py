"""Per-app Docker networks on every host, and the firewall that keeps dynos in their lane.

Each app has its network on each Docker host where it has containers
(`slipway-app-<app id>` in the default scope, labelled `org.slipway.app=<id>` and
`org.slipway.managed=<scope>`; contracts/scope.py), made with its first container
there and removed with its last by the scheduler (libs/appnet.py): dynos of the app
share the bridge (ICC on), apps sit on different bridges, and Docker's own isolation
chains drop traffic between bridges.

What Docker does not stop is a dyno reaching the *host*: its bridge gateway
address or any other address of the machine, where the platform's services
would answer if one were ever bound beyond loopback. The scope's chain
(`SLIPWAY-ISOLATION` by default), jumped to first from INPUT, drops every new connection
that arrives on an app bridge, except to the router's public ports (dynos may
call any app through its public URL, as on Heroku). Replies to connections the
host opened (health checks, the router's proxying) pass as ESTABLISHED. The
chain is rebuilt atomically (`iptables-restore --noflush`) from the networks
of this scope that exist and the apps that do (`Networks`), and stays in place
when network-wirer stops. Only this
scope's networks, chain and jump are ever listed, rebuilt or removed: another
installation on the machine (the test suite beside `scripts/up`) keeps its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence

import aiodocker
import structlog

from slipway.contracts.scheduler import LABEL_APP
from slipway.contracts.scope import Scope
from slipway.libs import appnet
from slipway.services.network_wirer.errors import IsolationError

log = structlog.get_logger("slipway.network_wirer.networks")


def bridge_of(network: dict[str, object]) -> str:
    """The Linux bridge interface of a Docker bridge network."""
    options = network.get("Options") or {}
    assert isinstance(options, dict)
    name = options.get("com.docker.network.bridge.name")
    return str(name) if name else f"br-{str(network['Id'])[:12]}"


def isolation_rules(
    bridges: Iterable[str], router_ports: Sequence[int], chain: str = Scope().chain
) -> list[str]:
    """The chain's rules (iptables-restore syntax) for these app bridges (pure)."""
    ports = ",".join(str(p) for p in sorted(set(router_ports)))
    rules = []
    for bridge in sorted(set(bridges)):
        rules += [
            f"-A {chain} -i {bridge} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
            f"-A {chain} -i {bridge} -p tcp -m multiport --dports {ports} -j RETURN",
            f"-A {chain} -i {bridge} -j DROP",
        ]
    return rules


class Isolation:
    """One scope's isolation chain on this machine (iptables, as root)."""

    def __init__(self, router_ports: Sequence[int], scope: Scope) -> None:
        self.router_ports = tuple(router_ports)
        self.chain = scope.chain
        self._applied: list[str] | None = None

    async def _run(self, *argv: str, stdin: bytes | None = None) -> int:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate(stdin)
        if process.returncode and argv[1] != "-C":
            raise IsolationError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
        return process.returncode or 0

    async def apply(self, bridges: Iterable[str]) -> None:
        """Make the chain hold exactly the rules for `bridges`, and INPUT jump to it."""
        rules = isolation_rules(bridges, self.router_ports, self.chain)
        if rules == self._applied:
            return
        # Declaring the chain in a --noflush restore empties it and refills it atomically.
        script = "\n".join(["*filter", f":{self.chain} - [0:0]", *rules, "COMMIT", ""])
        await self._run("iptables-restore", "--noflush", stdin=script.encode())
        if await self._run("iptables", "-C", "INPUT", "-j", self.chain) != 0:
            await self._run("iptables", "-I", "INPUT", "1", "-j", self.chain)
        self._applied = rules
        log.info("isolation.applied", bridges=len(rules) // 3)


class Networks:
    """One scope's app networks on each Docker host: verified, firewalled, never made here.

    The scheduler makes an app's network with the app's first container on a host and
    removes it with the last (libs/appnet.py). The chain holds the bridges of the
    networks that exist and of every app the gateway knows, with or without a network:
    bridge names follow from app ids, so the network the scheduler makes for an app's
    next dyno is already firewalled when it appears, not at this service's next pass.
    """

    def __init__(
        self,
        docker_urls: Sequence[str],
        isolation: Isolation | None,
        scope: Scope,
        pool: str = "",
        prefix: int = appnet.DEFAULT_SUBNET_PREFIX,
    ) -> None:
        self.hosts = [aiodocker.Docker(url=url) for url in docker_urls]
        self.isolation = isolation
        self.scope = scope
        self.pool = appnet.parse_pool(pool or scope.pool, prefix)
        self.prefix = prefix
        self._known: frozenset[str] = frozenset()  # app ids of the last sync
        self._firewall = asyncio.Lock()  # one listing-and-apply at a time: the last one wins

    async def close(self) -> None:
        for docker in self.hosts:
            await docker.close()

    async def _app_networks(self, docker: aiodocker.Docker) -> list[dict[str, object]]:
        # Exactly this scope's: another installation's networks are not ours to firewall.
        wanted = [self.scope.managed_label, LABEL_APP]
        return await docker.networks.list(filters={"label": wanted})

    async def sync(self, app_ids: Iterable[str]) -> None:
        """Verify every app network that exists and firewall it and every known app's bridge."""
        self._known = frozenset(app_ids)
        for docker in self.hosts:
            for network in await self._app_networks(docker):
                labels = network.get("Labels") or {}
                assert isinstance(labels, dict)
                _verify(network, str(labels.get(LABEL_APP, "")), self.pool, self.prefix)
        await self.sync_isolation()

    async def remove(self, app_id: str) -> None:
        """Remove a destroyed app's network on every host where no container of it is left."""
        self._known = self._known - {app_id}
        for docker in self.hosts:
            try:
                # Containers left (the scheduler removes them): its release, or the next
                # event, removes the network; Docker would refuse while one runs anyway.
                if not await appnet.app_containers(docker, app_id, self.scope):
                    await appnet.remove_app_network(docker, app_id, self.scope)
            except aiodocker.DockerError as exc:
                log.warning("network.remove_failed", app_id=app_id, error=str(exc))
        await self.sync_isolation()

    async def sync_isolation(self) -> None:
        """Firewall every app bridge on this machine (only the local engine has our iptables)."""
        if self.isolation is None or not self.hosts:
            return
        async with self._firewall:
            networks = await self._app_networks(self.hosts[0])
            bridges = {bridge_of(n) for n in networks}
            bridges |= {self.scope.bridge(app_id) for app_id in self._known}
            await self.isolation.apply(bridges)


def _verify(
    network: dict[str, object], app_id: str, pool: ipaddress.IPv4Network, prefix: int
) -> None:
    """Warn about an app network made with other flags, or a subnet off the settings.

    A network of another size or outside the pool (made before a settings change) still
    works; it takes the new size when its app next comes back to the host.
    """
    subnets = appnet.used_subnets([network])
    if not any(s.prefixlen == prefix and s.subnet_of(pool) for s in subnets):
        log.warning(
            "network.unexpected_subnet",
            app_id=app_id,
            subnets=sorted(str(s) for s in subnets),
            pool=str(pool),
            prefix=prefix,
        )
    options = network.get("Options") or {}
    assert isinstance(options, dict)
    labels = network.get("Labels") or {}
    assert isinstance(labels, dict)
    icc = options.get("com.docker.network.bridge.enable_icc", "true")
    if network.get("Driver") != "bridge" or icc != "true" or labels.get(LABEL_APP) != app_id:
        log.warning(
            "network.unexpected_flags",
            app_id=app_id,
            driver=network.get("Driver"),
            icc=icc,
            label=labels.get(LABEL_APP),
        )
