"""Alert rules and alerts (the monitor's), and the platform's status — Slipway extensions.

    GET    /apps/{app}/alert-rules            any role
    POST   /apps/{app}/alert-rules            {metric, threshold, window_minutes}: deployers
    DELETE /apps/{app}/alert-rules/{rule}     deployers
    GET    /apps/{app}/alerts                 any role: firing first, then the newest
    GET    /admin/status                      platform admins: `slipway admin:status`
    GET    /admin/alerts                      platform admins: the platform's alerts

The monitor stores rules and evaluates them; the gateway checks who may ask, audits
rule changes in the team's chain, and shapes the answers. Metrics: `p95_ms` (ms),
`error_rate` (% of requests answered 5xx), `crashed_dynos` (count), each compared over
the rule's window (1 to 60 minutes).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from slipway.contracts import monitor as mc
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import Action, actor, app_for, require_admin
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.views import NamedRef, View
from slipway.services.gateway.outbox.changes import change

routes = Routes("alerts")

CALL_TIMEOUT = 10.0


class CreateAlertRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str
    threshold: float
    window_minutes: int = 5


class AlertRuleView(View, frozen=True, kw_only=True):
    """Slipway: fire an alert when `metric` is above `threshold` over the last minutes."""

    id: str
    app: NamedRef
    metric: str
    threshold: float
    window_minutes: int
    created_at: str


class AlertView(View, frozen=True, kw_only=True):
    """Slipway: one alert, from the pass that found its condition to the one that found it gone."""

    id: str
    scope: str  # "app" or "platform"
    kind: str
    severity: str  # "warning" or "critical"
    state: str  # "firing" or "resolved"
    summary: str
    app: NamedRef | None
    rule_id: str | None
    value: float | None
    threshold: float | None
    started_at: str
    resolved_at: str | None


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rule_view(rule: mc.AlertRule, app_name: str) -> AlertRuleView:
    return AlertRuleView(
        id=rule.id,
        app=NamedRef(id=rule.app_id, name=app_name),
        metric=rule.metric,
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        created_at=_iso(rule.created_at),
    )


def alert_view(alert: mc.Alert) -> AlertView:
    return AlertView(
        id=alert.id,
        scope=alert.scope,
        kind=alert.kind,
        severity=alert.severity,
        state=alert.state,
        summary=alert.summary,
        app=NamedRef(id=alert.app_id, name=alert.app_name) if alert.app_id else None,
        rule_id=alert.rule_id or None,
        value=alert.value,
        threshold=alert.threshold,
        started_at=_iso(alert.started_at),
        resolved_at=None if alert.resolved_at is None else _iso(alert.resolved_at),
    )


def check_rule(body: CreateAlertRule) -> mc.RuleMetric:
    """The rule's metric, or InvalidParams saying what would be accepted."""
    if body.metric not in mc.RULE_METRICS:
        raise InvalidParams(
            f"metric must be one of {', '.join(mc.RULE_METRICS)}, not {body.metric[:40]!r}."
        )
    if not 1 <= body.window_minutes <= 60:
        raise InvalidParams("window_minutes must be from 1 to 60.")
    if body.threshold != body.threshold or body.threshold < 0:  # NaN, or below zero
        raise InvalidParams("threshold must be a number, zero or more.")
    return body.metric


@routes.get(
    "/apps/{app}/alert-rules",
    summary="The app's alert rules",
    response=list[AlertRuleView],
    extension=True,
)
async def list_rules(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "see the app's alert rules")
    answer = await request.app[GATEWAY].bus.call(
        mc.ALERT_RULES_LIST, mc.ListRules(app_id=app.id), timeout=CALL_TIMEOUT
    )
    return reply([rule_view(rule, app.name) for rule in answer.rules])


@routes.post(
    "/apps/{app}/alert-rules",
    summary="Add an alert rule: p95_ms, error_rate or crashed_dynos above a threshold",
    body=CreateAlertRule,
    response=AlertRuleView,
    status=201,
    extension=True,
)
async def add_rule(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "add alert rules to the app")
    body = await read_body(request, CreateAlertRule)
    metric = check_rule(body)
    answer = await gw.bus.call(
        mc.ALERT_RULES_ADD,
        mc.AddRule(
            app_id=app.id,
            app_name=app.name,
            team_id=app.team_id,
            metric=metric,
            threshold=body.threshold,
            window_minutes=body.window_minutes,
        ),
        timeout=CALL_TIMEOUT,
    )
    rule = answer.rule
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "alert_rule.add",
            app_name=app.name,
            app_id=app.id,
            details={
                "rule": rule.id,
                "metric": rule.metric,
                "threshold": str(rule.threshold),
                "window_minutes": str(rule.window_minutes),
            },
        )
    return reply(rule_view(rule, app.name), status=201)


@routes.delete(
    "/apps/{app}/alert-rules/{rule}",
    summary="Remove an alert rule",
    response=AlertRuleView,
    extension=True,
)
async def remove_rule(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "remove the app's alert rules")
    rule_id = request.match_info["rule"]
    answer = await gw.bus.call(
        mc.ALERT_RULES_REMOVE,
        mc.RemoveRule(app_id=app.id, rule_id=rule_id[:64]),
        timeout=CALL_TIMEOUT,
    )
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "alert_rule.remove",
            app_name=app.name,
            app_id=app.id,
            details={"rule": answer.rule.id, "metric": answer.rule.metric},
        )
    return reply(rule_view(answer.rule, app.name))


@routes.get(
    "/apps/{app}/alerts",
    summary="The app's alerts: firing first, then the newest resolved",
    response=list[AlertView],
    extension=True,
)
async def list_alerts(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "see the app's alerts")
    answer = await request.app[GATEWAY].bus.call(
        mc.ALERTS_LIST, mc.ListAlerts(app_id=app.id), timeout=CALL_TIMEOUT
    )
    return reply([alert_view(a) for a in answer.alerts])


@routes.get(
    "/admin/alerts",
    summary="The platform's alerts (platform admins): firing first, then the newest",
    response=list[AlertView],
    extension=True,
)
async def platform_alerts(request: web.Request) -> web.Response:
    require_admin(request)
    answer = await request.app[GATEWAY].bus.call(
        mc.ALERTS_LIST, mc.ListAlerts(app_id=""), timeout=CALL_TIMEOUT
    )
    return reply([alert_view(a) for a in answer.alerts])


@routes.get(
    "/admin/status",
    summary="The platform's status (platform admins): services, hosts, consumers, disks,"
    " backups, firing alerts; `health` is the worst of them",
    response=mc.PlatformStatus,
    extension=True,
)
async def status(request: web.Request) -> web.Response:
    require_admin(request)
    answer = await request.app[GATEWAY].bus.call(
        mc.MONITOR_STATUS, mc.GetStatus(), timeout=CALL_TIMEOUT
    )
    return reply(answer)
