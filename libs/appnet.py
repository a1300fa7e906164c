"""Each app's Docker network on a host: made with its first container there, gone with its last.

An app's network exists on a host only while the app has containers there (dynos,
one-off dynos, the release phase, add-on databases): the scheduler, which makes and
removes every one of them, goes through `AppNetworks`, so it makes the network just
before a container needs it and removes it once none is left. network-wirer makes
none; it verifies and firewalls the ones that exist, and removes a destroyed app's.

Every network has the same name, bridge and labels, and a subnet of
`SLIPWAY_APP_SUBNET_PREFIX` (default /27: 29 addresses beside the gateway, more
dynos of one app than a host runs) from Slipway's own pool: Docker's default pools
hold only about thirty bridge networks, far fewer than a host has apps. A /16 pool
holds 2,048 /27s, so 2,048 apps with containers on one host. Name, bridge, labels and
the default pool come from the installation's scope (`contracts.scope`), so two
installations on one engine never share a network.

Two creators racing cannot make two networks: the bridge name is fixed per app,
so the second create fails and the network the first one made is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Iterable

import aiodocker
import structlog

from slipway.contracts.scheduler import LABEL_APP
from slipway.contracts.scope import Scope

log = structlog.get_logger("slipway.appnet")

# /27: 32 addresses, 29 for containers beside the network, broadcast and gateway ones.
DEFAULT_SUBNET_PREFIX = 27
# /24 holds 253 containers of one app on a host; /29 still 5 (a dyno, a database, a
# one-off and room to roll); shorter than /24 would leave a /16 pool a few apps only.
MIN_SUBNET_PREFIX = 24
MAX_SUBNET_PREFIX = 29


class NetworkPoolExhausted(RuntimeError):
    """Every subnet of the pool is taken on this host."""


def check_subnet_prefix(prefix: int) -> None:
    """Refuse a per-app subnet size outside /24../29 (ValueError, naming the setting)."""
    if not MIN_SUBNET_PREFIX <= prefix <= MAX_SUBNET_PREFIX:
        raise ValueError(
            f"SLIPWAY_APP_SUBNET_PREFIX {prefix} is out of range: give {MIN_SUBNET_PREFIX}"
            f" to {MAX_SUBNET_PREFIX} (/{MIN_SUBNET_PREFIX}: 253 containers of one app per"
            f" host, /{MAX_SUBNET_PREFIX}: 5)"
        )


def parse_pool(pool: str, prefix: int = DEFAULT_SUBNET_PREFIX) -> ipaddress.IPv4Network:
    """The pool as a network, refused (ValueError) unless it holds at least one subnet."""
    check_subnet_prefix(prefix)
    try:
        network = ipaddress.ip_network(pool)
    except ValueError:
        network = None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(
            f"SLIPWAY_APP_NETWORK_POOL {pool!r} is not an IPv4 range such as 10.210.0.0/16"
            " (the address must be the range's first one)"
        )
    if network.prefixlen > prefix:
        raise ValueError(
            f"SLIPWAY_APP_NETWORK_POOL {pool} is smaller than one app subnet"
            f" (/{prefix}, SLIPWAY_APP_SUBNET_PREFIX): give a /{prefix} or a larger range"
        )
    return network


def used_subnets(networks: Iterable[dict[str, object]]) -> set[ipaddress.IPv4Network]:
    """The IPv4 subnets Docker networks already hold."""
    taken: set[ipaddress.IPv4Network] = set()
    for network in networks:
        ipam = network.get("IPAM") or {}
        assert isinstance(ipam, dict)
        for config in ipam.get("Config") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                subnet = ipaddress.ip_network(config["Subnet"], strict=False)
                if isinstance(subnet, ipaddress.IPv4Network):
                    taken.add(subnet)
    return taken


def free_subnet(
    pool: str, taken: set[ipaddress.IPv4Network], prefix: int = DEFAULT_SUBNET_PREFIX
) -> ipaddress.IPv4Network:
    """The first /`prefix` of `pool` that overlaps nothing taken (pure).

    One pass over the taken ranges in address order, not a test of every candidate
    against every range: a host with two thousand networks asks this for each new one.
    """
    network = parse_pool(pool, prefix)
    first = int(network.network_address)
    size = 1 << (32 - prefix)
    spans = sorted(
        (int(t.network_address), int(t.broadcast_address)) for t in taken if t.overlaps(network)
    )
    candidate = first  # the lowest subnet that overlaps none of the spans seen so far
    for start, end in spans:
        if end < candidate:
            continue
        if start >= candidate + size:
            break  # spans further on start later still: the candidate is free
        candidate = first + -(-(end + 1 - first) // size) * size  # the next one past `end`
    if candidate + size - 1 > int(network.broadcast_address):
        count = network.num_addresses // size
        raise NetworkPoolExhausted(
            f"no free /{prefix} left in {pool} for another app network on this host: its"
            f" {count} app subnets are taken by apps with containers here. Scale an app to"
            " zero to free one, or set SLIPWAY_APP_NETWORK_POOL to a larger range (or"
            " SLIPWAY_APP_SUBNET_PREFIX to a longer prefix)"
        )
    return ipaddress.IPv4Network((candidate, prefix))


async def ensure_app_network(
    docker: aiodocker.Docker,
    app_id: str,
    *,
    scope: Scope,
    pool: str = "",
    prefix: int = DEFAULT_SUBNET_PREFIX,
    attempts: int = 20,
) -> str:
    """The name of `app_id`'s network in `scope` on this engine, created if missing.

    Its subnet (a /`prefix`) comes from `pool`, or the scope's own pool when that is empty.
    """
    name = scope.network(app_id)
    pool = pool or scope.pool
    # Subnets the engine refused although no listed network holds them (another creator's,
    # or one Docker has not released yet): not offered again by this call.
    refused: set[ipaddress.IPv4Network] = set()
    for _ in range(attempts):
        try:
            await docker.networks.get(name)
            return name
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        subnet = free_subnet(pool, used_subnets(await docker.networks.list()) | refused, prefix)
        try:
            await docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "CheckDuplicate": True,
                    "Options": scope.network_options(app_id),
                    "IPAM": {
                        "Driver": "default",
                        "Config": [{"Subnet": str(subnet), "Gateway": str(subnet[1])}],
                    },
                    "Labels": scope.network_labels(app_id),
                }
            )
            log.info("network.created", app_id=app_id, subnet=str(subnet))
            return name
        except aiodocker.DockerError as exc:
            # Made by another creator meanwhile (409, or its bridge exists), or our subnet
            # was just taken by another app: look again.
            refused.add(subnet)
            log.info("network.create_retry", app_id=app_id, subnet=str(subnet), error=str(exc))
    await docker.networks.get(name)  # raises if it still does not exist
    return name


async def app_containers(docker: aiodocker.Docker, app_id: str, scope: Scope) -> int:
    """How many containers of `app_id` in `scope` this engine holds, stopped ones included.

    A crashed dyno is a stopped container waiting for its restart: Docker would let its
    network go (only running containers hold endpoints), and the restart would then fail.
    """
    wanted = [scope.managed_label, f"{LABEL_APP}={app_id}"]
    return len(await docker.containers.list(all=True, filters={"label": wanted}))


async def remove_app_network(docker: aiodocker.Docker, app_id: str, scope: Scope) -> bool:
    """Remove `app_id`'s network in `scope` from this engine; whether one was removed.

    Only a network with this scope's label, this app's label and this app's exact name
    is touched; one Docker refuses to remove (still in use) is left, logged.
    """
    name = scope.network(app_id)
    wanted = [scope.managed_label, f"{LABEL_APP}={app_id}"]
    removed = False
    for found in await docker.networks.list(filters={"label": wanted}):
        if found.get("Name") != name:
            continue
        try:
            await (await docker.networks.get(str(found["Id"]))).delete()
            removed = True
            log.info("network.removed", app_id=app_id, name=name)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                log.warning("network.remove_failed", app_id=app_id, error=str(exc))
    return removed


class AppNetworks:
    """App networks made for the containers one process creates, and removed after them.

    A container is created inside `held`: the network is made (or found) under the
    lock of its (host, app), and a hold keeps `release` from removing it until the
    `held` block ends, by when Docker lists the new container. `release` removes the
    network under the same lock, only with no hold and no container of the app on the
    host. So a create right after a remove waits for it, then makes a new network, and a
    remove never takes the network from a container being created.

    The locks and holds live in this process: one scheduler (the leader) creates and
    removes every app container, so one `AppNetworks` sees every creator.
    """

    def __init__(self, scope: Scope, pool: str = "", prefix: int = DEFAULT_SUBNET_PREFIX) -> None:
        self.scope = scope
        self.pool = pool or scope.pool
        self.prefix = prefix
        parse_pool(self.pool, prefix)  # refused here, before the first container
        # Kept for the process's life (one small lock per host and app ever used): a lock
        # dropped while a caller waits on it would let a second one be made beside it.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._holds: Counter[tuple[str, str]] = Counter()

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def held(self, docker: aiodocker.Docker, host_id: str, app_id: str) -> AsyncIterator[str]:
        """The app's network on `host_id`, kept at least until this block ends; its name."""
        key = (host_id, app_id)
        async with self._lock(key):
            name = await ensure_app_network(
                docker, app_id, scope=self.scope, pool=self.pool, prefix=self.prefix
            )
            self._holds[key] += 1
        try:
            yield name
        finally:
            self._holds[key] -= 1
            if self._holds[key] <= 0:
                del self._holds[key]

    async def release(self, docker: aiodocker.Docker, host_id: str, app_id: str) -> bool:
        """Remove the app's network on `host_id` if nothing there uses it; whether it went."""
        key = (host_id, app_id)
        async with self._lock(key):
            if self._holds[key] > 0:
                return False
            if await app_containers(docker, app_id, self.scope):
                return False
            return await remove_app_network(docker, app_id, self.scope)

    async def sweep(self, docker: aiodocker.Docker, host_id: str) -> int:
        """Release every app network of this scope on `host_id` left without containers.

        What the release after each removal missed: a container removed outside the
        scheduler, a create that failed after its network was made, a host back from an
        outage. How many networks went.
        """
        wanted = [self.scope.managed_label, LABEL_APP]
        apps = set()
        for network in await docker.networks.list(filters={"label": wanted}):
            app_id = str((network.get("Labels") or {}).get(LABEL_APP, ""))
            if app_id and network.get("Name") == self.scope.network(app_id):
                apps.add(app_id)
        removed = 0
        for app_id in sorted(apps):
            removed += await self.release(docker, host_id, app_id)
        return removed
