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

import msgspec

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


# ---- uptime (#20 item 4): network-wirer probes every routed app through its router ------


class GetUptime(Message, tag="router.uptime.get.v1", frozen=True, kw_only=True):
    """An app's availability and incidents, as this router's probes saw them."""

    app_id: str
    incidents: int = 20  # the newest ones; network-wirer caps it at 100


class UptimeWindow(msgspec.Struct, frozen=True, kw_only=True):
    """Probes over one window ending now, counted by the hour (the window starts at the
    hour that holds its start)."""

    name: str  # "24h", "7d", "30d"
    seconds: int
    probes: int  # probes counted
    up: int  # of them, answered by a dyno (any status)
    dyno_errors: int = 0  # of `up`, answered by the dyno with a 5xx status
    availability: float | None = None  # percent up; None: no probe in the window


class UptimeIncident(msgspec.Struct, frozen=True, kw_only=True):
    """A stretch of probes the app did not answer: the router did, with an error code."""

    started_at: float  # seconds since the epoch: the first failed probe
    ended_at: float | None = None  # the first answered probe after it; None: still down
    codes: list[str] = []  # Heroku error codes seen, first first ("H10", "H12"; "H99": none)


class Uptime(Message, tag="router.uptime.v1", frozen=True, kw_only=True):
    app_id: str
    probe_interval: float  # seconds between two probes of one app (0: probes are off)
    windows: list[UptimeWindow]
    incidents: list[UptimeIncident]  # newest first
    last_probe_at: float | None = None


# The gateway reads it for `GET /apps/{app}/uptime` (after its own access check).
UPTIME_GET: Rpc[GetUptime, Uptime] = Rpc(
    Service.NETWORK_WIRER,
    "uptime.get",
    subjects.rpc(Service.NETWORK_WIRER, "uptime.get"),
    GetUptime,
    Uptime,
    callers=only(Service.GATEWAY),
)


# ---- per-app router metrics (#20 item 1): a customer's metrics drain scrapes them ------------


class GetRouterMetrics(Message, tag="router.metrics.get.v1", frozen=True, kw_only=True):
    """One app's router counters, since this network-wirer started."""

    app_id: str


class AppRouterMetrics(Message, tag="router.metrics.v1", frozen=True, kw_only=True):
    """The app's `slipway_router_*` series as numbers only: no path, host or address.

    `bucket_bounds` are the histogram's finite upper bounds in seconds (JSON has no
    infinity) and `bucket_counts` the cumulative counts under each, as Prometheus keeps
    them, plus one last for +Inf: the number of answers.
    """

    app_id: str
    responses: dict[str, int] = {}  # status class ("2xx", ..., "other") → answers
    bucket_bounds: list[float] = []
    bucket_counts: list[int] = []
    seconds_sum: float = 0.0
    enabled: bool = True  # False: this network-wirer keeps no metrics (SLIPWAY_METRICS off)


# The gateway reads it for `GET /apps/{app}/metrics/openmetrics` (after its own access check).
ROUTER_METRICS_GET: Rpc[GetRouterMetrics, AppRouterMetrics] = Rpc(
    Service.NETWORK_WIRER,
    "router.metrics.get",
    subjects.rpc(Service.NETWORK_WIRER, "router.metrics.get"),
    GetRouterMetrics,
    AppRouterMetrics,
    callers=only(Service.GATEWAY),
)


# ---- the router's certificates (#20 item 2): the monitor warns before one expires ----------


class ListRouterCertificates(Message, tag="router.certs.list.v1", frozen=True, kw_only=True):
    """The certificates this router serves for apps, the soonest to expire first."""

    limit: int = 500  # network-wirer answers 1 to 1,000: a reply stays far below NATS's 1 MB


class RouterCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate HAProxy holds: its names, whose it is, who issued it, its expiry."""

    hostnames: list[str]  # the app's hosts it serves, its custom domains first
    app_id: str = ""  # "" for the router's default certificate
    app_name: str = ""
    issuer: str = "internal"  # "internal" (the router's CA) or "acme"
    not_after: float  # seconds since the epoch


class RouterCertificateList(Message, tag="router.certs.v1", frozen=True, kw_only=True):
    router_id: str  # the network-wirer instance (one router) that holds them
    certificates: list[RouterCertificate] = []  # not_after ascending, at most `limit`
    total: int = 0  # how many it holds in all


# Fan-out: every network-wirer drives one router and holds that router's certificates, so
# the monitor gathers every router's answer (contracts/backup.py's BACKUP_HEALTH does too).
ROUTER_CERTS_LIST: Rpc[ListRouterCertificates, RouterCertificateList] = Rpc(
    Service.NETWORK_WIRER,
    "certs.list",
    subjects.rpc(Service.NETWORK_WIRER, "certs.list"),
    ListRouterCertificates,
    RouterCertificateList,
    fanout=True,
    callers=only(Service.MONITOR),
)
