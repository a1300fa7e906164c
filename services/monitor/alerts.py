"""From conditions to alerts: fire the new, escalate the worse, resolve the gone, tell once.

Each pass hands `Alerter.sync` the conditions true now. A condition without a firing
alert fires one; a firing alert whose condition is now more severe (a disk from 85 % to
past the high-water mark, a certificate from 14 days to 1) escalates and is told again;
one whose condition is gone resolves, unless the source it depends on could not be read
this pass (a missing answer is not good news). A firing alert's value and summary follow
the condition quietly (the status screen shows the lag now, not when it fired).

Every change is stored first, then told: the webhooks that include `alert` (idempotent by
the change's id), an `ALERT_CHANGED` event (the log-shipper writes the `heroku[alert]`
line into the app's log), and a `slipway[alert]` line in the monitor's own log for the
operator. A change not told yet (a crash in between, the bus refusing) is told on the
next pass.

A full disk must not silence the alert about it. When the store cannot write, a change is
held in memory (by alert id, so nothing is lost), told from there (the webhooks send it
from memory too, services/monitor/webhooks.py), and stored, marked as told, at the first
pass that can write again. A restart meanwhile loses only what could not be written, and
the next pass finds the same conditions again.
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
from slipway.libs.errors import disk_full
from slipway.services.monitor.health import Condition
from slipway.services.monitor.store import MonitorStore

log = structlog.get_logger("slipway.monitor.alerts")

# Called for each change told: (app_id, include, action, data, event_id); the webhooks'
# notify. The event id makes a repeat (the bus refused after the webhooks took it) a no-op.
Notify = Callable[[str, str, str, dict[str, Any], str], Awaitable[None]]

_RANK = {"warning": 1, "critical": 2}
# The bus may be down with the disk; a pass must not wait its default 30 s on each change.
_PUBLISH_RETRY_FOR = 5.0


def change_id(alert: Alert) -> str:
    """One id per told change: fired, escalated to a severity, resolved."""
    if alert.state == "firing":
        return f"{alert.id}-firing-{alert.severity}"
    return f"{alert.id}-{alert.state}"


class Alerter:
    def __init__(
        self,
        store: MonitorStore,
        bus: Bus,
        notify: Notify | None = None,
        bus_full: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.bus = bus
        self.notify = notify
        # Whether the bus's store is past the high-water mark: its events then wait (see
        # announce), as the gateway's own writes do.
        self.bus_full = bus_full
        # Changes the store could not take (its disk is full), by alert id, oldest first;
        # with whether the change escalated an alert already told.
        self._held: dict[str, tuple[Alert, bool]] = {}
        # Changes told whose telling could not be recorded yet (change ids).
        self._told: set[str] = set()

    @property
    def held(self) -> int:
        """How many alert changes wait in memory for the disk to have room."""
        return len(self._held)

    async def firing(self) -> dict[str, Alert]:
        """The firing alerts by key: the store's, as the changes held in memory leave them."""
        found = await self.store.firing()
        for alert, _ in self._held.values():
            if alert.state == "firing":
                found[alert.key] = alert
            elif found.get(alert.key, alert).id == alert.id:
                found.pop(alert.key, None)
        return found

    async def sync(
        self,
        platform: list[Condition],
        apps: list[tuple[Condition, AlertRule, str, str]],
        unread: set[str],
    ) -> None:
        now = time.time()
        await self._store_held()
        firing = await self.firing()
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
            current = firing.get(key)
            if current is None:
                await self._save(alert)
                continue
            moved = msgspec.structs.replace(
                current,
                severity=alert.severity,
                summary=alert.summary,
                value=alert.value,
                threshold=alert.threshold,
            )
            if _RANK[alert.severity] > _RANK[current.severity]:
                await self._save(moved, escalated=True)
            elif moved != current:
                # Quietly (not told again): the value now, the same severity or a lower one
                # (an alert does not de-escalate while it fires: it resolves).
                quiet = msgspec.structs.replace(moved, severity=current.severity)
                if quiet != current:
                    await self._save(quiet, quiet=True)
        for key, alert in firing.items():
            if key in wanted:
                continue
            if _source_of(alert) in unread:
                continue
            await self._save(msgspec.structs.replace(alert, state="resolved", resolved_at=now))

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

    async def _save(self, alert: Alert, *, escalated: bool = False, quiet: bool = False) -> None:
        """Store one change; held in memory (and told from there) when the disk is full."""
        if alert.id in self._held:
            # An earlier change of this alert waits in memory: this one joins it there, so
            # the two are stored in order.
            _, was_escalated = self._held.pop(alert.id)
            self._held[alert.id] = (alert, escalated or was_escalated)
            return
        try:
            await self.store.put(alert)
        except Exception as exc:
            if not disk_full(exc):
                raise
            if quiet:
                return  # a value moving is not worth memory: the next pass says it again
            log.warning("monitor.alert_held", alert=alert.key, state=alert.state, error=repr(exc))
            self._held[alert.id] = (alert, escalated)

    async def _store_held(self) -> None:
        """Store what the disk refused before, oldest first, marked told where it was."""
        for alert_id, (alert, _) in list(self._held.items()):
            told = change_id(alert) in self._told
            try:
                await self.store.put(alert, told=told)
            except Exception as exc:
                if disk_full(exc):
                    return  # still full: keep them all, in order
                raise
            del self._held[alert_id]
            self._told.discard(change_id(alert))
            log.info("monitor.alert_stored", alert=alert.key, state=alert.state, told=told)

    async def announce(self) -> None:
        """Tell every change not told yet; one that fails is told again next pass.

        The webhooks are told first and independently of the bus: after a full disk
        JetStream may refuse every event until nats-server restarts (tests/disk/
        test_jetstream_full.py), and the webhooks must not wait for that. Once the bus has
        refused in this pass it is not asked again until the next one. Past the high-water
        mark of the bus's own disk the events are not even offered: a JetStream write that
        meets a full disk leaves the stream refusing every later write until nats-server
        restarts, and the platform's other writers have stopped at that mark already.
        """
        bus = [not self.bus_full()]
        for alert, told_severity in await self.store.unannounced():
            escalated = alert.state == "firing" and told_severity not in ("", alert.severity)
            if not await self._tell_once(alert, escalated, bus):
                continue
            try:
                await self.store.announced(alert)
            except Exception as exc:
                if not disk_full(exc):
                    raise
                continue  # told and remembered as told (self._told): recorded later
            self._told.discard(change_id(alert))
        for alert, escalated in list(self._held.values()):
            await self._tell_once(alert, escalated, bus)

    async def _tell_once(self, alert: Alert, escalated: bool, bus: list[bool]) -> bool:
        """Tell a change unless it was told already; False when some of it failed.

        `bus[0]`: the bus may still be asked in this pass (cleared at its first refusal).
        """
        if change_id(alert) in self._told:
            return True
        try:
            await self._tell(alert, escalated, publish=bus[0])
        except Exception as exc:
            if isinstance(exc, _BusRefused):
                bus[0] = False
            log.warning("monitor.alert_untold", alert=alert.key, error=repr(exc))
            return False
        if not bus[0]:
            return False  # the webhooks were told; the event waits for the bus
        self._told.add(change_id(alert))
        return True

    async def _tell(self, alert: Alert, escalated: bool, *, publish: bool = True) -> None:
        action = "escalate" if escalated else "fire"
        if alert.state != "firing":
            action = "resolve"
        line = (
            f"slipway[alert]: RESOLVED {alert.summary}"
            if action == "resolve"
            else f"slipway[alert]: {alert.severity.upper()} {alert.summary}"
        )
        if alert.scope == "platform":
            log.warning("monitor.alert", line=line, key=alert.key, state=alert.state)
        else:
            log.info("monitor.alert", app=alert.app_name, key=alert.key, state=alert.state)
        event_id = change_id(alert)
        # The webhooks first: they need no disk (nor the bus) when the disk is full.
        if self.notify is not None:
            await self.notify(alert.app_id, "alert", action, msgspec.to_builtins(alert), event_id)
        if not publish:
            return
        event = AlertChanged(event_id=event_id, alert=alert)
        try:
            # A duplicate when told before a crash: JetStream drops it by its id.
            await self.bus.publish(ALERT_CHANGED, event, retry_for=_PUBLISH_RETRY_FOR)
        except Exception as exc:
            raise _BusRefused(repr(exc)) from exc


class _BusRefused(Exception):
    """The bus did not store an alert's event (its disk full, JetStream down)."""


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
