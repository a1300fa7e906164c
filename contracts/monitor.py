"""The monitor: the platform's own health, app alert rules and the alerts they raise.

The monitor is the one service that looks at everything and changes nothing: it asks
every instance `$SRV.PING`/`$SRV.STATS`, reads the consumers' positions (read-only
JetStream API calls, `natsauth.MONITOR_READS`), hears every service's disk readings,
asks the scheduler for its hosts, every router (network-wirer) for its certificates and
the log-shipper for the apps' minute series, and
from those keeps the platform's status (`slipway admin:status`) and raises alerts.

    gateway  MONITOR_STATUS            -> PlatformStatus (GET /admin/status)
    gateway  ALERT_RULES_{LIST,ADD,REMOVE} (slipway alerts, alerts:add, alerts:remove)
    gateway  ALERTS_LIST               -> the app's (or the platform's) alerts, firing first
    monitor  ALERT_CHANGED             an alert fired or resolved (audit, webhooks)

An alert's `key` names what it is about ("disk:keyring:/var/slipway/keyring",
"app:<id>:p95_ms"), so a condition that stays true is one alert, not one per pass.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, RepT, ReqT, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service

Health = Literal["green", "yellow", "red"]
AlertScope = Literal["app", "platform"]
AlertState = Literal["firing", "resolved"]
Severity = Literal["warning", "critical"]

# What an app rule can watch: p95_ms (milliseconds) and error_rate (percent of requests
# answered 5xx) come from the router's records (the log-shipper's minute series),
# crashed_dynos counts the app's dyno crashes (the scheduler's events) over the window.
# Memory over quota needs no rule: R14 and R15 always go to the app's log, as on Heroku.
RuleMetric = Literal["p95_ms", "error_rate", "crashed_dynos"]
RULE_METRICS: tuple[RuleMetric, ...] = ("p95_ms", "error_rate", "crashed_dynos")


# ---- status: one screen for the operator --------------------------------------------------


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One running service instance, as its discovery answers say."""

    service: str
    instance: str
    version: str = ""
    started_at: str = ""  # ISO 8601, the instance's own clock
    uptime_s: float = 0.0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    health: Health = "green"
    detail: str = ""


class HostStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: str
    address: str
    memory_mb: int
    dynos: int
    max_dynos: int | None = None
    last_seen_s: float | None = None  # seconds since the scheduler last heard from it
    health: Health = "green"


class ConsumerStatus(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    consumer: str
    pending: int  # messages in the stream the consumer has not been given yet
    ack_pending: int  # given, not acknowledged
    redelivered: int
    health: Health = "green"


class DiskStatus(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    instance: str
    label: str
    path: str
    used_percent: float
    free_bytes: int
    age_s: float  # since the reading
    health: Health = "green"


class BackupStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One database's backups, as its host's backup service reports them."""

    app_id: str
    addon_id: str
    addon_name: str
    host_id: str
    last_backup_at: float | None  # epoch seconds of the newest completed base backup
    age_s: float | None
    schedule: str  # "daily at 02:00 UTC", "" when none
    overdue: bool
    last_verification: str = ""  # "passed", "failed", "" never
    health: Health = "green"


class CertificateStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One certificate a router serves, as network-wirer's ROUTER_CERTS_LIST reports it."""

    hostnames: list[str]
    app_id: str = ""  # "" for the router's default certificate
    app_name: str = ""
    issuer: str = "internal"  # "internal" (the router's CA) or "acme"
    router_id: str = ""
    not_after: float  # epoch seconds
    days_left: float  # negative once expired
    health: Health = "green"


class GetStatus(Message, tag="monitor.status.get.v1", frozen=True, kw_only=True):
    pass


class PlatformStatus(Message, tag="monitor.status.v1", frozen=True, kw_only=True):
    """Everything `slipway admin:status` shows; `health` is the worst of its parts."""

    at: float
    health: Health
    instances: list[InstanceStatus] = []
    missing: list[str] = []  # services with no instance answering
    hosts: list[HostStatus] = []
    consumers: list[ConsumerStatus] = []
    disks: list[DiskStatus] = []
    backups: list[BackupStatus] = []
    alerts: list[Alert] = []  # firing platform alerts
    # The routers' certificates, the soonest to expire first (at most the monitor's bound).
    certificates: list[CertificateStatus] = []
    problems: list[str] = []  # what made it yellow or red, one line each


# ---- alert rules and alerts -----------------------------------------------------------------


class AlertRule(msgspec.Struct, frozen=True, kw_only=True):
    """Fire when `metric` stays above `threshold` for `window_minutes` (app rules)."""

    id: str
    app_id: str
    metric: RuleMetric
    threshold: float
    window_minutes: int = 5
    created_at: float = 0.0


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    key: str
    scope: AlertScope
    # "disk", "service_down", "consumer_lag", "backup_overdue", "certificate_expiring", ...,
    # or a RuleMetric
    kind: str
    severity: Severity
    state: AlertState
    summary: str  # one line a human reads: what, where, how much
    app_id: str = ""
    app_name: str = ""
    team_id: str = ""
    rule_id: str = ""
    value: float | None = None
    threshold: float | None = None
    started_at: float = 0.0
    resolved_at: float | None = None


class ListRules(Message, tag="monitor.rules.list.v1", frozen=True, kw_only=True):
    app_id: str


class AddRule(Message, tag="monitor.rules.add.v1", frozen=True, kw_only=True):
    app_id: str
    app_name: str
    team_id: str
    metric: RuleMetric
    threshold: float
    window_minutes: int = 5


class RemoveRule(Message, tag="monitor.rules.remove.v1", frozen=True, kw_only=True):
    app_id: str
    rule_id: str


class Rules(Message, tag="monitor.rules.v1", frozen=True, kw_only=True):
    rules: list[AlertRule] = []


class RuleAnswer(Message, tag="monitor.rule.v1", frozen=True, kw_only=True):
    rule: AlertRule


class ListAlerts(Message, tag="monitor.alerts.list.v1", frozen=True, kw_only=True):
    """An app's alerts (`app_id`), or the platform's (`app_id` "")."""

    app_id: str = ""
    limit: int = 50


class Alerts(Message, tag="monitor.alerts.v1", frozen=True, kw_only=True):
    alerts: list[Alert] = []


class AlertChanged(Event, tag="monitor.alert.changed.v1", frozen=True, kw_only=True):
    """An alert fired or resolved."""

    alert: Alert


def _rpc(verb: str, request: type[ReqT], reply: type[RepT], *callers: str) -> Rpc[ReqT, RepT]:
    return Rpc(
        Service.MONITOR,
        verb,
        subjects.rpc(Service.MONITOR, verb),
        request,
        reply,
        callers=only(*callers),
    )


MONITOR_STATUS: Rpc[GetStatus, PlatformStatus] = _rpc(
    "status", GetStatus, PlatformStatus, Service.GATEWAY, OPERATOR
)
ALERT_RULES_LIST: Rpc[ListRules, Rules] = _rpc("rules.list", ListRules, Rules, Service.GATEWAY)
ALERT_RULES_ADD: Rpc[AddRule, RuleAnswer] = _rpc("rules.add", AddRule, RuleAnswer, Service.GATEWAY)
ALERT_RULES_REMOVE: Rpc[RemoveRule, RuleAnswer] = _rpc(
    "rules.remove", RemoveRule, RuleAnswer, Service.GATEWAY
)
ALERTS_LIST: Rpc[ListAlerts, Alerts] = _rpc("alerts.list", ListAlerts, Alerts, Service.GATEWAY)
ALERT_CHANGED: EventSpec[AlertChanged] = EventSpec(
    subjects.evt("monitor", "alert.changed"), AlertChanged, publishers=only(Service.MONITOR)
)
