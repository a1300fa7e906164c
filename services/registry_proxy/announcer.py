"""Relays IMAGE_PUSHED events from registry-proxy's outbox to JetStream.

A landed manifest and its event are committed together (store.record_push); this
relay publishes pending events in order, the event id as `Nats-Msg-Id`, and marks
them sent. It is woken after each push and sweeps every `interval` seconds, so an
event whose publication failed (NATS away) goes out once NATS is back, or after
a restart.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from slipway.contracts.registry import IMAGE_PUSHED
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError
from slipway.libs.waits import wait_for_event
from slipway.services.registry_proxy.store import Store

log = structlog.get_logger("slipway.registry_proxy.announcer")


class Announcer:
    """Publishes the outbox; `wake()` after each commit."""

    def __init__(self, store: Store, bus: Bus, *, interval: float = 5.0) -> None:
        self.store = store
        self.bus = bus
        self.interval = interval
        self.failures = 0  # relay passes that stopped on an error (NATS away)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wake.set()  # relay what a previous run left pending
        self._task = asyncio.create_task(self._run(), name="registry-announcer")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """A last pass, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(SlipwayError):
            await self.relay()

    async def relay(self) -> int:
        """Publish every pending event in order; how many were published."""
        published = 0
        while batch := await self.store.pending_events():
            for row in batch:
                await self.bus.publish_persistent(
                    IMAGE_PUSHED.subject, row.payload, msg_id=row.event_id, retry_for=5.0
                )
                await self.store.mark_sent(row.seq)
                published += 1
        return published

    async def _run(self) -> None:
        while True:
            await wait_for_event(self._wake, self.interval)
            self._wake.clear()
            try:
                await self.relay()
            except SlipwayError as exc:
                self.failures += 1
                log.warning("registry.announce_failed", error=exc.message)
