"""The router's facts and names: custom domains, and the per-app Docker network.

The gateway publishes `DOMAIN_ADDED` / `DOMAIN_REMOVED` (stream EVT) when a
customer adds or removes a custom hostname; network-wirer routes it (and Caddy
gets it a certificate). `AppDesired.domains` (contracts.gateway) carries the
current set for reconciles.

Each app has one Docker network on every host, made by network-wirer (or by the
scheduler with the same name and options when it places a dyno first). Its Linux
bridge is named by `app_bridge_name` so one firewall rule (`slw+`) covers every
app: dynos reach the internet and the router's public ports, nothing else on
the host, and never another app's bridge.
"""

from __future__ import annotations

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec

NETWORK_PREFIX = "slipway-app-"
BRIDGE_PREFIX = "slw"  # Linux interface names hold 15 characters: "slw" + 12
LABEL_NETWORK_APP = "org.slipway.app"  # the same key as contracts.scheduler.LABEL_APP


def app_network_name(app_id: str) -> str:
    """The Docker network of one app: `slipway-app-<app id>`."""
    return f"{NETWORK_PREFIX}{app_id}"


def app_bridge_name(app_id: str) -> str:
    """The Linux bridge of an app's network (the firewall matches the `slw` prefix)."""
    return f"{BRIDGE_PREFIX}{app_id.replace('-', '')[:12]}"


def app_network_options(app_id: str) -> dict[str, str]:
    """Driver options an app network is created with (and checked against)."""
    return {
        "com.docker.network.bridge.name": app_bridge_name(app_id),
        # Dynos of one app talk to each other; other apps sit on other bridges.
        "com.docker.network.bridge.enable_icc": "true",
    }


class DomainAdded(Event, tag="domain.added.v1", frozen=True, kw_only=True):
    """A custom hostname now belongs to an app."""

    app_id: str
    app_name: str
    team_id: str
    domain_id: str
    hostname: str
    actor: str


class DomainRemoved(Event, tag="domain.removed.v1", frozen=True, kw_only=True):
    """A custom hostname no longer belongs to an app."""

    app_id: str
    app_name: str
    team_id: str
    domain_id: str
    hostname: str
    actor: str


DOMAIN_ADDED: EventSpec[DomainAdded] = EventSpec(subjects.evt("domain", "added"), DomainAdded)
DOMAIN_REMOVED: EventSpec[DomainRemoved] = EventSpec(
    subjects.evt("domain", "removed"), DomainRemoved
)
