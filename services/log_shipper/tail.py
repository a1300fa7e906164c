"""Live fan-out: new lines of each app go out on `tail_subject(app_id)`, in small batches.

Core NATS, never JetStream: nothing is stored, and when no tail listens the
server drops the message. Lines are gathered for `tail_interval` seconds (50 ms
by default) so that a busy app costs a few messages a second, not one per
line; a tail sees a line well within a second of Docker handing it over.

Who may listen is the gateway's decision: it checks the caller's role on the
app before it subscribes for them (see services/gateway/logs/logs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from slipway.contracts.base import encode
from slipway.contracts.log_shipper import LogEntry, TailBatch, tail_subject
from slipway.libs.bus import Bus

log = structlog.get_logger("slipway.log_shipper.tail")

MAX_LINES_PER_MESSAGE = 2000


class TailFanout:
    """Collects ingested lines per app and publishes them every `interval` seconds."""

    def __init__(self, bus: Bus, host: str, interval: float) -> None:
        self.bus = bus
        self.host = host
        self.interval = interval
        self._waiting: dict[str, list[LogEntry]] = {}

    def offer(self, app_id: str, entries: Sequence[LogEntry]) -> None:
        """A History listener: queue lines for the next publish."""
        self._waiting.setdefault(app_id, []).extend(entries)

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until `stopping`, then once more."""
        while not stopping.is_set():
            await asyncio.sleep(self.interval)
            await self.publish()
        await self.publish()

    async def publish(self) -> None:
        """Send everything waiting, per app, in messages of bounded size."""
        waiting, self._waiting = self._waiting, {}
        for app_id, entries in waiting.items():
            for start in range(0, len(entries), MAX_LINES_PER_MESSAGE):
                chunk = entries[start : start + MAX_LINES_PER_MESSAGE]
                batch = TailBatch(app_id=app_id, host=self.host, lines=chunk)
                try:
                    await self.bus.live_publish(tail_subject(app_id), encode(batch))
                except Exception as exc:  # reconnecting: tails miss lines, history keeps them
                    log.warning("tail.publish_failed", app_id=app_id, error=repr(exc))
