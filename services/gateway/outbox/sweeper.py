"""A background loop that does one sweep when woken, and at least every `interval` seconds.

The outbox relay and the checkpoint signer share it: a commit wakes them at
once; the interval catches anything a lost wake-up left behind; a failing sweep
(NATS or the keyring away) is retried with a short backoff, never given up.
"""

from __future__ import annotations

import asyncio

import aiosqlite
import structlog

from slipway.libs.errors import SlipwayError
from slipway.libs.waits import wait_for_event

log = structlog.get_logger("slipway.gateway")


class Sweeper:
    """Subclasses implement `sweep()`; `wake()` asks for one soon."""

    name = "sweep"

    def __init__(self, *, interval: float = 5.0) -> None:
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"gateway-{self.name}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop after one last sweep (bounded by `timeout`)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning(f"{self.name}.stopped_unfinished")

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.sweep()
                failures = 0
            except (SlipwayError, aiosqlite.Error) as exc:
                failures += 1
                log.warning(f"{self.name}.failed", error=repr(exc), failures=failures)
            if self._stopping:
                return
            delay = self.interval if failures == 0 else min(0.2 * 2**failures, self.interval)
            await wait_for_event(self._wake, delay)
