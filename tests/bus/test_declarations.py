"""The declarations in contracts/ are complete, and every policy table agrees with them."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.contracts.catalog import CONSUMERS, DEFAULT_INSTANCES, catalog
from slipway.contracts.registry import CREDENTIALS_ISSUE, IMAGES_LIST
from slipway.contracts.subjects import Service
from slipway.libs import natsauth
from slipway.libs.service import ServiceApp
from slipway.services.builder.app import create_service as create_builder
from slipway.services.builder.settings import BuilderSettings
from slipway.services.gateway.app import create_service as create_gateway
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.keyring import policy as keyring_policy
from slipway.services.log_shipper.app import create_service as create_log_shipper
from slipway.services.log_shipper.settings import LogShipperSettings
from slipway.services.network_wirer.app import create_service as create_wirer
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.registry_proxy import policy as registry_policy
from slipway.services.registry_proxy.app import create_service as create_registry_proxy
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.scheduler.app import create_service as create_scheduler
from slipway.services.scheduler.settings import SchedulerSettings


def test_every_endpoint_names_who_may_use_it() -> None:
    """No RPC, command, event or live kind is left without callers, senders or writers."""
    cat = catalog()
    assert [r.name for r in cat.rpcs if not r.callers] == []
    assert [c.name for c in cat.commands if not c.senders] == []
    assert [e.subject for e in cat.events if not e.publishers] == []
    assert [lv.kind for lv in cat.lives if not (lv.writers and lv.readers)] == []


def test_the_keyrings_policy_table_agrees_with_the_declared_callers() -> None:
    """Each keyring operation is granted to exactly the callers its RPC declares."""
    assert keyring_policy.disagreements() == []


def test_registry_proxys_policy_table_agrees_with_the_declared_callers() -> None:
    """Credentials and image lists are granted to exactly their declared callers."""
    op = registry_policy.Operation
    granted = {
        CREDENTIALS_ISSUE.name: {g.caller for g in registry_policy.TABLE if g.operation != op.LIST},
        IMAGES_LIST.name: {g.caller for g in registry_policy.TABLE if g.operation == op.LIST},
    }
    assert granted == {
        CREDENTIALS_ISSUE.name: set(CREDENTIALS_ISSUE.callers),
        IMAGES_LIST.name: set(IMAGES_LIST.callers),
    }


def _services() -> list[ServiceApp]:
    # Created, never run: only their registrations are read.
    home = "/nonexistent"
    return [
        create_gateway(GatewaySettings(home=home)),
        create_wirer(WirerSettings(home=home)),
        create_scheduler(SchedulerSettings(home=home)),
        create_registry_proxy(RegistryProxySettings(home=home)),
        create_log_shipper(LogShipperSettings(home=home)),
        create_builder(BuilderSettings(home=home)),
    ]


@pytest.mark.parametrize("service", _services(), ids=lambda s: str(s.service))
def test_the_consumers_a_service_starts_are_the_provisioned_ones(service: ServiceApp) -> None:
    """Each event consumer a service registers is declared, with the same events."""
    provisioned: dict[str, set[str]] = {}
    for spec in CONSUMERS:
        if spec.service != service.service:
            continue
        instances = DEFAULT_INSTANCES.get(spec.service, (None,)) if spec.per_instance else (None,)
        for instance in instances:
            provisioned[spec.durable_purpose(instance)] = {e.subject for e in spec.events}
    routes: dict[str, list[Any]] = service._event_routes  # what run() will consume
    started = {purpose: {r.subject for r in found} for purpose, found in routes.items()}
    assert started == provisioned


def test_no_service_user_holds_the_jetstream_admin_api() -> None:
    """Generated permissions never include `$JS.API.>` or any wildcard above a service."""
    for service in Service:
        perms = natsauth.permissions(service)
        wide = {">", "$JS.>", "$JS.API.>", "slipway.>", "_INBOX.>", "$SRV.>"}
        assert wide.isdisjoint(perms.publish) and wide.isdisjoint(perms.subscribe)
