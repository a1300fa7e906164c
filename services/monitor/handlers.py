"""The monitor's RPCs: the status screen, an app's alert rules, alerts to read."""

from __future__ import annotations

from slipway.contracts import monitor as mc
from slipway.libs.bus import context
from slipway.libs.errors import InvalidRequest, NotFound
from slipway.libs.service import ServiceApp

MAX_RULES_PER_APP = 20
MAX_WINDOW_MINUTES = 60  # the log-shipper keeps minute buckets for about an hour


def check_rule(req: mc.AddRule) -> None:
    """InvalidRequest for a rule that could never mean anything."""
    if req.metric not in mc.RULE_METRICS:
        raise InvalidRequest(
            f"{req.metric!r} is not a metric: use one of {', '.join(mc.RULE_METRICS)}"
        )
    if not 1 <= req.window_minutes <= MAX_WINDOW_MINUTES:
        raise InvalidRequest(f"the window is 1 to {MAX_WINDOW_MINUTES} minutes")
    limits = {
        "p95_ms": (1.0, 300_000.0),
        "error_rate": (0.0, 100.0),
        "crashed_dynos": (0.0, 1000.0),
    }
    low, high = limits[req.metric]
    if not low <= req.threshold < high or req.threshold != req.threshold:
        raise InvalidRequest(
            f"a {req.metric} threshold is from {low:g} up to (not including) {high:g}"
        )


def register(service: ServiceApp) -> None:
    from slipway.services.monitor.app import MONITOR, STORE

    @service.rpc(mc.MONITOR_STATUS)
    async def status(req: mc.GetStatus) -> mc.PlatformStatus:
        context.require_caller(mc.MONITOR_STATUS)
        return await service[MONITOR].status()

    @service.rpc(mc.ALERT_RULES_LIST)
    async def rules(req: mc.ListRules) -> mc.Rules:
        context.require_caller(mc.ALERT_RULES_LIST)
        return mc.Rules(rules=await service[STORE].rules(req.app_id))

    @service.rpc(mc.ALERT_RULES_ADD)
    async def add(req: mc.AddRule) -> mc.RuleAnswer:
        context.require_caller(mc.ALERT_RULES_ADD)
        check_rule(req)
        store = service[STORE]
        if len(await store.rules(req.app_id)) >= MAX_RULES_PER_APP:
            raise InvalidRequest(
                f"an app has at most {MAX_RULES_PER_APP} alert rules: remove one first"
            )
        rule = await store.add_rule(
            app_id=req.app_id,
            app_name=req.app_name,
            team_id=req.team_id,
            metric=req.metric,
            threshold=req.threshold,
            window_minutes=req.window_minutes,
        )
        return mc.RuleAnswer(rule=rule)

    @service.rpc(mc.ALERT_RULES_REMOVE)
    async def remove(req: mc.RemoveRule) -> mc.RuleAnswer:
        context.require_caller(mc.ALERT_RULES_REMOVE)
        rule = await service[STORE].remove_rule(req.app_id, req.rule_id)
        if rule is None:
            raise NotFound(f"no alert rule {req.rule_id} on this app")
        return mc.RuleAnswer(rule=rule)

    @service.rpc(mc.ALERTS_LIST)
    async def alerts(req: mc.ListAlerts) -> mc.Alerts:
        context.require_caller(mc.ALERTS_LIST)
        limit = min(max(req.limit, 1), 500)
        return mc.Alerts(alerts=await service[STORE].alerts(app_id=req.app_id, limit=limit))
