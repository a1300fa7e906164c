"""App alert rules: each rule's metric over its window, from the log-shipper and the dynos.

p95 and the 5xx rate are read from the log-shipper's minute series of the app's router
records (every shipper answers for the records it took; summed, they are every request's),
over the rule's last `window_minutes` minutes including the current one. A window without
requests has no p95 and no error rate: quiet is not an alert. Crashes are counted from
the scheduler's events over the window (store.py), so one over in a second still counts.
"""

from __future__ import annotations

import time

import structlog

from slipway.contracts.log_shipper import (
    METRICS_SERIES_GET,
    GetMetricSeries,
    add_counts,
    percentile_ms,
)
from slipway.contracts.monitor import AlertRule
from slipway.libs.bus import Bus
from slipway.services.monitor.health import Condition
from slipway.services.monitor.store import MonitorStore

log = structlog.get_logger("slipway.monitor.apps")

STEP = 60


def _describe(rule: AlertRule, value: float) -> str:
    window = f"over the last {rule.window_minutes} min"
    match rule.metric:
        case "p95_ms":
            return f"p95 response time {value:.0f} ms {window} (threshold {rule.threshold:g} ms)"
        case "error_rate":
            return (
                f"{value:.1f} % of requests answered 5xx {window} (threshold {rule.threshold:g} %)"
            )
        case "crashed_dynos":
            return f"{value:.0f} dyno crash(es) {window} (threshold {rule.threshold:g})"
    return f"{rule.metric} = {value:g}"  # pragma: no cover - RuleMetric is closed


async def app_conditions(
    bus: Bus, store: MonitorStore, unread: dict[str, str]
) -> list[tuple[Condition, AlertRule, str, str]]:
    """(condition, rule, app name, team) for every rule over its threshold now.

    An app whose series could not be read is named in `unread` ("app:<id>"), so its
    firing alerts stay as they are this pass.
    """
    rules = await store.all_rules()
    series: dict[tuple[str, int], tuple[int, int, list[int]]] = {}
    found = []
    now = time.time()
    for rule, app_name, team_id in rules:
        if rule.metric == "crashed_dynos":
            since = now - rule.window_minutes * STEP
            value: float | None = float(await store.crashes_since(rule.app_id, since))
        else:
            key = (rule.app_id, rule.window_minutes)
            if key not in series:
                try:
                    series[key] = await _window(bus, rule.app_id, rule.window_minutes, now)
                except Exception as exc:  # a shipper not answering: judge it next pass
                    unread[f"app:{rule.app_id}"] = str(exc) or type(exc).__name__
                    log.warning("monitor.series_unread", app_id=rule.app_id, error=repr(exc))
                    continue
            requests, errors, counts = series[key]
            if rule.metric == "p95_ms":
                value = percentile_ms(counts, 0.95) if requests else None
            else:
                value = 100.0 * errors / requests if requests else None
        if value is None or value <= rule.threshold:
            continue
        condition = Condition(
            key=f"rule:{rule.id}",
            kind=rule.metric,
            severity="warning",
            summary=_describe(rule, value),
            source=f"app:{rule.app_id}",
            value=round(value, 2),
            threshold=rule.threshold,
        )
        found.append((condition, rule, app_name, team_id))
    return found


async def _window(bus: Bus, app_id: str, minutes: int, now: float) -> tuple[int, int, list[int]]:
    """(requests, 5xx answers, response-time bucket counts) over the app's last minutes."""
    since = int(now // STEP) * STEP - (minutes - 1) * STEP
    gathered = await bus.gather(
        METRICS_SERIES_GET, GetMetricSeries(app_id=app_id, since=since, step=STEP), timeout=5.0
    )
    if gathered.errors:
        raise RuntimeError("; ".join(f"{k}: {v}" for k, v in gathered.errors.items()))
    requests = errors = 0
    counts: list[int] = []
    for answer in gathered.replies.values():
        for point in answer.points:
            if point.at < since:
                continue
            requests += point.requests
            errors += point.status_5xx
            counts = add_counts(counts, point.response_ms)
    return requests, errors, counts
