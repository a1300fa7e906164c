"""Every endpoint the platform declares, and the durable consumers provisioned for them.

`libs/natsauth` builds each NATS user's permissions from this catalog alone, and
`libs/bus/provision` creates the streams and consumers it names, so that what a
service may do on the bus and what it is declared to do cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from slipway.contracts import (
    addons,
    backup,
    builder,
    disk,
    gateway,
    keyring,
    log_shipper,
    logs,
    monitor,
    oneoff,
    registry,
    router,
    scheduler,
    snapshot,
    webhooks,
)
from slipway.contracts.base import CommandSpec, ConsumerSpec, EventSpec, LiveSpec, Rpc
from slipway.contracts.subjects import Service

_MODULES: tuple[ModuleType, ...] = (
    addons,
    backup,
    builder,
    disk,
    gateway,
    keyring,
    log_shipper,
    logs,
    monitor,
    oneoff,
    registry,
    router,
    scheduler,
    snapshot,
    webhooks,
)

S = Service
CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec(S.GATEWAY, "builds", (builder.BUILD_FINISHED,)),
    ConsumerSpec(S.GATEWAY, "deploys", (scheduler.DEPLOY_FINISHED,)),
    ConsumerSpec(S.GATEWAY, "addons", (addons.ADDON_CHANGED,)),
    ConsumerSpec(S.GATEWAY, "backups", (backup.BACKUP_VERIFIED,)),
    ConsumerSpec(
        S.SCHEDULER,
        "addons",
        (addons.ADDON_CREATED, addons.ADDON_DESTROYED, gateway.APP_DESTROYED),
    ),
    # Each router (one per host that receives traffic) is driven by its own network-wirer,
    # which needs every route event: a copy per router id.
    ConsumerSpec(
        S.NETWORK_WIRER,
        "routes",
        (
            scheduler.DYNO_CHANGED,
            gateway.MAINTENANCE_CHANGED,
            gateway.APP_FEATURE_CHANGED,
            gateway.APP_RENAMED,
            router.DOMAIN_ADDED,
            router.DOMAIN_REMOVED,
            gateway.APP_DESTROYED,
        ),
        per_instance=True,
    ),
    ConsumerSpec(
        S.SCHEDULER,
        "desired",
        (gateway.RELEASE_CREATED, gateway.FORMATION_CHANGED, gateway.APP_DESTROYED),
    ),
    ConsumerSpec(S.REGISTRY_PROXY, "gc", (gateway.RELEASE_CREATED, gateway.APP_DESTROYED)),
    ConsumerSpec(
        S.LOG_SHIPPER,
        "platform",
        (
            scheduler.DYNO_CHANGED,
            gateway.RELEASE_CREATED,
            gateway.FORMATION_CHANGED,
            monitor.ALERT_CHANGED,
        ),
    ),
    # Each Docker host's log-shipper keeps its own copy of app and drain state.
    ConsumerSpec(
        S.LOG_SHIPPER,
        "host",
        (
            gateway.APP_CREATED,
            gateway.APP_DESTROYED,
            gateway.TEAM_SHREDDED,
            log_shipper.DRAIN_CHANGED,
            scheduler.DYNO_CHANGED,
            gateway.LOG_RETENTION_CHANGED,
        ),
        per_instance=True,
    ),
    # Each host's backup service streams the databases of its host: it learns them all.
    ConsumerSpec(
        S.BACKUP,
        "host",
        (
            addons.ADDON_CREATED,
            addons.ADDON_CHANGED,
            addons.ADDON_DESTROYED,
            gateway.APP_DESTROYED,
            gateway.TEAM_SHREDDED,
        ),
        per_instance=True,
    ),
    # The monitor counts each app's crashed dynos (its alert rules); a destroyed app's or
    # shredded team's rules and alerts go.
    ConsumerSpec(
        S.MONITOR,
        "dynos",
        (scheduler.DYNO_CHANGED, gateway.APP_DESTROYED, gateway.TEAM_SHREDDED),
    ),
    # Each builder has its own engine and build cache to clean up.
    ConsumerSpec(S.BUILDER, "apps", (gateway.APP_DESTROYED,), per_instance=True),
    # App webhooks: what happened to an app, delivered to its subscribers; a shredded
    # team's webhooks, events and alerts are forgotten.
    ConsumerSpec(
        S.MONITOR,
        "webhooks",
        (
            gateway.RELEASE_CREATED,
            builder.BUILD_FINISHED,
            scheduler.DYNO_CHANGED,
            gateway.APP_DESTROYED,
            gateway.TEAM_SHREDDED,
        ),
    ),
)

# The instances a per-instance consumer is provisioned for when nobody says otherwise:
# one builder without a stable instance name, one log-shipper on the host "local", one
# router named "local".
DEFAULT_INSTANCES: dict[str, tuple[str | None, ...]] = {
    S.BUILDER: (None,),
    S.NETWORK_WIRER: ("local",),
    S.LOG_SHIPPER: ("local",),
    S.BACKUP: ("local",),
}


@dataclass(frozen=True)
class Catalog:
    """All declarations, by kind."""

    rpcs: tuple[Rpc[Any, Any], ...]
    commands: tuple[CommandSpec[Any], ...]
    events: tuple[EventSpec[Any], ...]
    lives: tuple[LiveSpec, ...]
    consumers: tuple[ConsumerSpec, ...]


def _declared(kind: type[Any]) -> list[Any]:
    found: dict[int, Any] = {}
    for module in _MODULES:
        for value in vars(module).values():
            # One endpoint per service (snapshot exports) is declared as a dict of them.
            for one in value.values() if isinstance(value, dict) else (value,):
                if isinstance(one, kind):
                    found.setdefault(id(one), one)
    return list(found.values())


def catalog() -> Catalog:
    """Every Rpc, CommandSpec, EventSpec and LiveSpec declared in contracts/, and CONSUMERS."""
    return Catalog(
        rpcs=tuple(_declared(Rpc)),
        commands=tuple(_declared(CommandSpec)),
        events=tuple(_declared(EventSpec)),
        lives=tuple(_declared(LiveSpec)),
        consumers=CONSUMERS,
    )
