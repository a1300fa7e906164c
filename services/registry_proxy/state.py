"""What registry-proxy's handlers share, kept on the ServiceApp under one key."""

from __future__ import annotations

from dataclasses import dataclass

from slipway.libs.service import Key
from slipway.services.registry_proxy.announcer import Announcer
from slipway.services.registry_proxy.credentials import Issuer
from slipway.services.registry_proxy.distribution import Distribution
from slipway.services.registry_proxy.gate import PushGate
from slipway.services.registry_proxy.gc import Collector
from slipway.services.registry_proxy.proxy import Proxy
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.store import Store


@dataclass
class RegistryProxy:
    """The running service's parts."""

    settings: RegistryProxySettings
    store: Store
    issuer: Issuer
    distribution: Distribution
    gate: PushGate
    announcer: Announcer
    collector: Collector
    proxy: Proxy


STATE = Key("registry-proxy", RegistryProxy)
