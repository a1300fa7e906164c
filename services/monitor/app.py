"""The monitor process: every `monitor_interval` seconds, look, judge, alert.

Resources, set up in this order and torn down in reverse: the database, the disk
readings subscription, then the pass loop. The last pass's status answers
`MONITOR_STATUS` at once (a fresh look when none is younger than an interval), so
`slipway admin:status` from cron costs the platform nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from nats.aio.msg import Msg

from slipway.contracts import disk
from slipway.contracts.gateway import APP_DESTROYED, TEAM_SHREDDED, AppDestroyed, TeamShredded
from slipway.contracts.monitor import PlatformStatus
from slipway.contracts.scheduler import DYNO_CHANGED, DynoChanged
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.service import Key, ServiceApp
from slipway.libs.waits import wait_for_event
from slipway.services.monitor import handlers, snapshot, webhooks
from slipway.services.monitor.alerts import Alerter
from slipway.services.monitor.apps import app_conditions
from slipway.services.monitor.health import Judge
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.monitor.status import DiskReadings, Looker
from slipway.services.monitor.store import MonitorStore

log = structlog.get_logger("slipway.monitor")

STORE = Key("monitor-store", MonitorStore)


def _unrecorded(held: int) -> str:
    return (
        f"the monitor's disk is full: {held} alert change(s) told from memory, recorded once"
        " space is freed"
    )


class Monitor:
    """The pass loop and the latest status."""

    def __init__(
        self, settings: MonitorSettings, store: MonitorStore, looker: Looker, alerter: Alerter
    ) -> None:
        self.settings = settings
        self.store = store
        self.looker = looker
        self.alerter = alerter
        expected = [s.strip() for s in settings.monitor_expect.split(",") if s.strip()]
        self.judge = Judge(settings, tuple(expected or (str(s) for s in Service)))
        self.latest: PlatformStatus | None = None
        self._lock = asyncio.Lock()

    async def run_pass(self) -> PlatformStatus:
        """One look at everything, judged; alerts fired, escalated, resolved (told by `loop`)."""
        async with self._lock:
            seen = await self.looker.look()
            status, conditions = self.judge.judge(seen)
            unread = dict(seen.unread)
            apps = await app_conditions(self.looker.bus, self.store, unread)
            if seen.disks == [] and "disks" not in unread:
                # Readings arrive every disk interval: none yet is not "no disk is full".
                unread["disks"] = "no readings yet"
            await self.alerter.sync(conditions, apps, set(unread))
            if self.alerter.held:
                # The monitor's own disk is full (its state folder shares it with the rest):
                # the alerts are told from memory, and the screen says why they are not kept.
                status = msgspec.structs.replace(
                    status,
                    health="red",
                    problems=[*status.problems, _unrecorded(self.alerter.held)],
                )
            firing = [a for a in (await self.alerter.firing()).values() if a.scope == "platform"]
            self.latest = status = msgspec.structs.replace(status, alerts=firing)
            return status

    async def status(self) -> PlatformStatus:
        latest = self.latest
        # The loop's last pass, unless the loop is stuck or has not finished one yet.
        if latest is None or time.time() - latest.at > 3 * self.settings.monitor_interval:
            return await self.run_pass()
        return latest

    async def loop(self, stopping: asyncio.Event) -> None:
        """Passes until stopped; a failing pass is logged and the next one comes anyway."""
        retention = self.settings.monitor_alert_retention_days * 86400
        while True:
            try:
                await self.run_pass()
                # Outside the pass's lock: telling may wait on a bus or a keyring that is
                # down, and the status screen must not wait with it.
                await self.alerter.announce()
                await self.store.forget_resolved(time.time() - retention)
                await self.store.forget_crashes(time.time() - 2 * 3600)  # windows are <= 1 h
            except Exception:
                log.exception("monitor.pass_failed")
            if await wait_for_event(stopping, self.settings.monitor_interval):
                return


MONITOR = Key("monitor", Monitor)


def create_service(settings: MonitorSettings) -> ServiceApp:
    """The monitor as a runnable service."""
    service = ServiceApp(
        Service.MONITOR,
        settings=settings,
        description="Slipway's monitor: platform status, alert rules and alerts",
    )
    # First: the alerter below tells the webhooks that include `alert`.
    webhooks.register(service, settings)

    @service.cleanup_ctx
    async def core(service: ServiceApp) -> AsyncIterator[None]:
        store = service[STORE] = await MonitorStore.open(settings.db_path())
        disks = DiskReadings()

        async def on_readings(msg: Msg) -> None:
            disks.record(msg.data)

        subscription = await service.bus.nc.subscribe(disk.READINGS.filter, cb=on_readings)
        looker = Looker(service.bus, disks, discovery_wait=settings.monitor_discovery_wait)
        hooks = service[webhooks.WEBHOOKS]

        async def notify(
            app_id: str, include: str, action: str, data: dict[str, Any], event_id: str
        ) -> None:
            await hooks.notify(app_id, include, action, data, event_id=event_id)

        alerter = Alerter(
            store,
            service.bus,
            notify=notify,
            bus_full=lambda: disks.bus_store_above(settings.disk_high_water, time.time()),
        )
        monitor = Monitor(settings, store, looker, alerter)
        service[MONITOR] = monitor
        task = asyncio.create_task(monitor.loop(service.stopping), name="monitor-passes")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await subscription.unsubscribe()
            await store.close()

    @service.event("dynos", DYNO_CHANGED)
    async def dyno_changed(event: DynoChanged) -> None:
        dyno = event.dyno
        if dyno.state == "crashed" and event.previous_state != "crashed":
            at = dyno.updated_at or event.occurred_at
            await service[STORE].crashed(
                event.event_id, dyno.app_id, dyno.name, dyno.release_version, at
            )

    @service.event("dynos", APP_DESTROYED)
    async def app_destroyed(event: AppDestroyed) -> None:
        await service[STORE].app_destroyed(event.event_id, event.app_id)

    @service.event("dynos", TEAM_SHREDDED)
    async def team_shredded(event: TeamShredded) -> None:
        await service[STORE].team_shredded(event.event_id, event.team_id)

    handlers.register(service)
    service.snapshot_sources = snapshot.sources(settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "monitor"))
    return service
