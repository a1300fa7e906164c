"""Each app's Docker network on a host, created the same way by whoever needs it first.

The scheduler needs the network before it creates a dyno; network-wirer owns it
afterwards (verifies it, firewalls its bridge, removes it with the app). Both
call `ensure_app_network`, so the network always has the same name, bridge,
labels and a /24 subnet from Slipway's own pool: Docker's default pools hold
only about thirty bridge networks, far fewer than a host has apps. Name, bridge,
labels and the default pool all come from the installation's scope
(`contracts.scope`), so two installations on one engine never share a network.

Two creators racing cannot make two networks: the bridge name is fixed per app,
so the second create fails and the network the first one made is used.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable

import aiodocker
import structlog

from slipway.contracts.scope import Scope

log = structlog.get_logger("slipway.appnet")

# 256 app networks per host and scope by default; SLIPWAY_APP_NETWORK_POOL changes it.
SUBNET_PREFIX = 24


class NetworkPoolExhausted(RuntimeError):
    """Every /24 of the pool is taken on this host."""


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


def free_subnet(pool: str, taken: set[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /24 of `pool` that overlaps nothing taken (pure)."""
    network = ipaddress.ip_network(pool)
    assert isinstance(network, ipaddress.IPv4Network)
    for candidate in network.subnets(new_prefix=SUBNET_PREFIX):
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise NetworkPoolExhausted(
        f"no free /{SUBNET_PREFIX} left in {pool} for another app network on this host;"
        " set SLIPWAY_APP_NETWORK_POOL to a larger range"
    )


async def ensure_app_network(
    docker: aiodocker.Docker,
    app_id: str,
    *,
    scope: Scope,
    pool: str = "",
    attempts: int = 20,
) -> str:
    """The name of `app_id`'s network in `scope` on this engine, created if missing.

    Its /24 comes from `pool`, or the scope's own pool when that is empty.
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
        subnet = free_subnet(pool, used_subnets(await docker.networks.list()) | refused)
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
