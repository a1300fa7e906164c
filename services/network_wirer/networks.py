"""Per-app Docker networks on every host, and the firewall that keeps dynos in their lane.

Each app has its network on each Docker host (`slipway-app-<app id>` in the
default scope, labelled `org.slipway.app=<id>` and `org.slipway.managed=<scope>`;
contracts/scope.py): dynos of the app share the bridge (ICC on), apps sit on
different bridges, and Docker's own isolation chains drop traffic between bridges.

What Docker does not stop is a dyno reaching the *host*: its bridge gateway
address or any other address of the machine, where the platform's services
would answer if one were ever bound beyond loopback. The scope's chain
(`SLIPWAY-ISOLATION` by default), jumped to first from INPUT, drops every new connection
that arrives on an app bridge, except to the router's public ports (dynos may
call any app through its public URL, as on Heroku). Replies to connections the
host opened (health checks, the router's proxying) pass as ESTABLISHED. The
chain is rebuilt atomically (`iptables-restore --noflush`) from the networks
of this scope that exist, and stays in place when network-wirer stops. Only this
scope's networks, chain and jump are ever listed, rebuilt or removed: another
installation on the machine (the test suite beside `scripts/up`) keeps its own.
"""

from __future__ import annotations

import asyncio
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
    """One scope's app networks on each Docker host."""

    def __init__(
        self,
        docker_urls: Sequence[str],
        isolation: Isolation | None,
        scope: Scope,
        pool: str = "",
    ) -> None:
        self.hosts = [aiodocker.Docker(url=url) for url in docker_urls]
        self.isolation = isolation
        self.scope = scope
        self.pool = pool or scope.pool

    async def close(self) -> None:
        for docker in self.hosts:
            await docker.close()

    async def _app_networks(self, docker: aiodocker.Docker) -> list[dict[str, object]]:
        # Exactly this scope's: another installation's networks are not ours to firewall.
        wanted = [self.scope.managed_label, LABEL_APP]
        return await docker.networks.list(filters={"label": wanted})

    async def ensure(self, app_ids: Iterable[str]) -> None:
        """Create each app's network where missing; warn about ones made with other flags."""
        wanted = set(app_ids)
        for docker in self.hosts:
            existing = {str(n["Name"]): n for n in await self._app_networks(docker)}
            for app_id in sorted(wanted):
                network = existing.get(self.scope.network(app_id))
                if network is None:
                    await self._create(docker, app_id)
                else:
                    _verify(network, app_id)
        await self.sync_isolation()

    async def _create(self, docker: aiodocker.Docker, app_id: str) -> None:
        await appnet.ensure_app_network(docker, app_id, scope=self.scope, pool=self.pool)

    async def remove(self, app_id: str) -> None:
        """Remove an app's network on every host (an app being destroyed)."""
        for docker in self.hosts:
            try:
                network = await docker.networks.get(self.scope.network(app_id))
                await network.delete()
                log.info("network.removed", app_id=app_id)
            except aiodocker.DockerError as exc:
                # 404: gone already; 403/409: dynos still attached, the next pass retries.
                if exc.status != 404:
                    log.warning("network.remove_failed", app_id=app_id, error=str(exc))
        await self.sync_isolation()

    async def sync_isolation(self) -> None:
        """Firewall every app bridge on this machine (only the local engine has our iptables)."""
        if self.isolation is None or not self.hosts:
            return
        networks = await self._app_networks(self.hosts[0])
        await self.isolation.apply(bridge_of(n) for n in networks)


def _verify(network: dict[str, object], app_id: str) -> None:
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
