"""From conditions to alerts: fire the new, resolve the gone, tell everyone once.

Each pass hands `Alerter.sync` the conditions true now. A condition without a firing
alert fires one; a firing alert whose condition is gone resolves, unless the source it
depends on could not be read this pass (a missing answer is not good news). Every change
is stored first, then told: an `ALERT_CHANGED` event (the log-shipper writes the
`heroku[alert]` line into the app's log; the gateway may audit it), the webhooks that
include `alert`, and a `slipway[alert]` line in the monitor's own log for the operator.
A change not told yet (a crash in between) is told on the next pass.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from slipway.contracts.base import new_id
from slipway.contracts.monitor import ALERT_CHANGED, Alert, AlertChanged, AlertRule
from slipway.libs.bus import Bus
from slipway.services.monitor.health import Condition
from slipway.services.monitor.store import MonitorStore

log = structlog.get_logger("slipway.monitor.alerts")

# Called for each change told: (app_id, include, action, data); the webhooks' notify.
Notify = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class Alerter:
    def __init__(self, store: MonitorStore, bus: Bus, notify: Notify | None = None) -> None:
        self.store = store
        self.bus = bus
        self.notify = notify

    async def sync(
        self,
        platform: list[Condition],
        apps: list[tuple[Condition, AlertRule, str, str]],
        unread: set[str],
    ) -> None:
        now = time.time()
        firing = await self.store.firing()
        wanted: dict[str, Alert] = {}
        for condition in platform:
            wanted[condition.key] = self._alert(condition, now)
        for condition, rule, app_name, team_id in apps:
            wanted[condition.key] = self._alert(
                condition,
                now,
                app_id=rule.app_id,
                app_name=app_name,
                team_id=team_id,
                rule_id=rule.id,
            )
        for key, alert in wanted.items():
            if key not in firing:
                await self.store.fire(alert)
        for key, alert in firing.items():
            if key in wanted:
                continue
            if _source_of(alert) in unread:
                continue
            await self.store.resolve(alert.id, now)
        await self.announce()

    def _alert(
        self,
        condition: Condition,
        now: float,
        *,
        app_id: str = "",
        app_name: str = "",
        team_id: str = "",
        rule_id: str = "",
    ) -> Alert:
        return Alert(
            id=new_id(),
            key=condition.key,
            scope="app" if app_id else "platform",
            kind=condition.kind,
            severity=condition.severity,
            state="firing",
            summary=condition.summary,
            value=condition.value,
            threshold=condition.threshold,
            started_at=now,
            app_id=app_id,
            app_name=app_name,
            team_id=team_id,
            rule_id=rule_id,
        )

    async def announce(self) -> None:
        """Tell every change not told yet; one that fails is told again next pass."""
        for alert in await self.store.unannounced():
            try:
                await self._tell(alert)
            except Exception as exc:
                log.warning("monitor.alert_untold", alert=alert.key, error=repr(exc))
                return
            await self.store.announced(alert)

    async def _tell(self, alert: Alert) -> None:
        action = "fire" if alert.state == "firing" else "resolve"
        line = (
            f"slipway[alert]: {alert.severity.upper()} {alert.summary}"
            if action == "fire"
            else f"slipway[alert]: RESOLVED {alert.summary}"
        )
        if alert.scope == "platform":
            log.warning("monitor.alert", line=line, key=alert.key, state=alert.state)
        else:
            log.info("monitor.alert", app=alert.app_name, key=alert.key, state=alert.state)
        event = AlertChanged(event_id=f"{alert.id}-{alert.state}", alert=alert)
        await self.bus.publish(ALERT_CHANGED, event)  # a duplicate: told before a crash
        if self.notify is not None:
            await self.notify(alert.app_id, "alert", action, msgspec.to_builtins(alert))


def _source_of(alert: Alert) -> str:
    """The source a stored alert depends on (platform kinds map to status.py's sources)."""
    if alert.scope == "app":
        return f"app:{alert.app_id}"
    return {
        "service_down": "services",
        "service_restarting": "services",
        "host_down": "hosts",
        "consumer_lag": "consumers",
        "disk": "disks",
        "backup_overdue": "backups",
        "backup_verification_failed": "backups",
        "certificate_expiring": "certificates",
    }.get(alert.kind, alert.kind)
