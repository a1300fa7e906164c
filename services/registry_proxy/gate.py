"""Keeping garbage collection and pushes apart.

Distribution's garbage collector marks the blobs that manifests reference and
deletes the rest: a layer uploaded by a push whose manifest has not landed yet
would be deleted under it. A push is a session of many requests (blob checks,
uploads, then the manifest), so the gate tracks sessions, keyed by the push
credential's token id:

- a session opens at its first request and closes when its manifest lands, or
  after `idle_s` without a request (an abandoned push);
- `exclusive()` (the collector) stops new sessions from opening — their first
  request waits, up to `wait_s` — and waits for open sessions to close;
- sessions already open go on while it waits, so a push never fails because a
  collection was requested.

Pulls never touch the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class GateClosed(Exception):
    """A new push waited longer than allowed for a garbage collection to finish."""


class PushGate:
    """Open push sessions, and a door the collector can close to new ones."""

    def __init__(self, *, idle_s: float, wait_s: float) -> None:
        self.idle_s = idle_s
        self.wait_s = wait_s
        self._last_seen: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    @property
    def sessions(self) -> int:
        """How many push sessions are open now."""
        self._expire()
        return len(self._last_seen)

    @property
    def closed(self) -> bool:
        """Whether a collection holds the door shut to new push sessions."""
        return not self._open.is_set()

    @asynccontextmanager
    async def request(self, session: str) -> AsyncIterator[None]:
        """Hold one request of push session `session`."""
        self._expire()
        if session not in self._last_seen:
            try:
                await asyncio.wait_for(self._open.wait(), self.wait_s)
            except TimeoutError:
                raise GateClosed("garbage collection is running; push again shortly") from None
        self._last_seen[session] = time.monotonic()
        self._in_flight[session] = self._in_flight.get(session, 0) + 1
        try:
            yield
        finally:
            self._in_flight[session] -= 1
            if self._in_flight[session] == 0:
                del self._in_flight[session]
            if session in self._last_seen:
                self._last_seen[session] = time.monotonic()
            await self._notify()

    async def finish(self, session: str) -> None:
        """The session's manifest landed: its blobs are referenced now."""
        self._last_seen.pop(session, None)
        await self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Close the door to new sessions and wait until none is open."""
        self._open.clear()
        try:
            async with self._changed:
                while True:
                    self._expire()
                    if not self._last_seen and not self._in_flight:
                        break
                    # Woken by a request ending or a session finishing; the timeout
                    # notices sessions that expire by going quiet.
                    oldest = min(self._last_seen.values(), default=time.monotonic())
                    wake_in = max(oldest + self.idle_s - time.monotonic(), 0.05)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wake_in)
            yield
        finally:
            self._open.set()

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_s
        for session, seen in list(self._last_seen.items()):
            if seen < cutoff and session not in self._in_flight:
                del self._last_seen[session]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
