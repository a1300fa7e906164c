"""The router's facts and names: custom domains, and the per-app Docker network.

The gateway publishes `DOMAIN_ADDED` / `DOMAIN_REMOVED` (stream EVT) when a
customer adds or removes a custom hostname; network-wirer routes it (and gets the
router a certificate for it). `AppDesired.domains` (contracts.gateway) carries the
current set for reconciles.

Each app has one Docker network on every host, made by network-wirer (or by the
scheduler with the same name and options when it places a dyno first); its name,
bridge and labels come from the installation's scope (`contracts.scope.Scope`):
dynos reach the internet and the router's public ports, nothing else on the
host, and never another app's bridge.
"""

from __future__ import annotations

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, Rpc, only
from slipway.contracts.subjects import Service


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


DOMAIN_ADDED: EventSpec[DomainAdded] = EventSpec(
    subjects.evt("domain", "added"), DomainAdded, publishers=only(Service.GATEWAY)
)
DOMAIN_REMOVED: EventSpec[DomainRemoved] = EventSpec(
    subjects.evt("domain", "removed"), DomainRemoved, publishers=only(Service.GATEWAY)
)


class IssueAddonCertificate(Message, tag="router.addon.cert.issue.v1", frozen=True, kw_only=True):
    """A server certificate for an add-on, named by its host on the app network.

    Only a CSR travels: the add-on's private key stays with the scheduler, which made it."""

    addon_id: str
    app_id: str
    name: str  # the add-on's name: its one DNS name (no dot: never a routed host name)
    csr: str  # PEM


class AddonCertificate(Message, tag="router.addon.cert.v1", frozen=True, kw_only=True):
    certificate: str  # PEM, signed by the router's internal CA
    ca: str  # PEM, that CA's root: what a client verifies the add-on against
    not_after: str = ""  # ISO 8601


# network-wirer holds the router's internal CA (its state's ca/): it signs, nobody else.
ROUTER_ADDON_CERT_ISSUE: Rpc[IssueAddonCertificate, AddonCertificate] = Rpc(
    Service.NETWORK_WIRER,
    "addon.cert.issue",
    subjects.rpc(Service.NETWORK_WIRER, "addon.cert.issue"),
    IssueAddonCertificate,
    AddonCertificate,
    callers=only(Service.SCHEDULER),
)
