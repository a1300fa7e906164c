"""What a live stream holds for a slow client: bounded, the oldest dropped and counted.

Build output and log tails arrive from NATS at the platform's pace and leave at
the client's. A client that reads slowly (or not at all) must not make the
gateway buffer without end: items wait here up to `max_items` and `max_bytes`;
past that the oldest waiting ones are dropped, and the writer shows
`dropped_marker(n)` where they were.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


def dropped_marker(count: int) -> str:
    """The line that stands for `count` lines a slow reader did not get."""
    return f"[... {count} lines dropped]"


class Backlog(Generic[T]):
    """A bounded FIFO between a NATS callback (`put`) and a writer (`take`)."""

    def __init__(self, max_items: int, max_bytes: int, size: Callable[[T], int]) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.size = size
        self.items: deque[T] = deque()
        self.bytes = 0
        self.dropped = 0
        self._ready = asyncio.Event()

    def put(self, items: Iterable[T]) -> None:
        """Queue `items`; drop the oldest waiting ones while over a limit."""
        for item in items:
            self.items.append(item)
            self.bytes += self.size(item)
        while len(self.items) > 1 and (
            len(self.items) > self.max_items or self.bytes > self.max_bytes
        ):
            self.bytes -= self.size(self.items.popleft())
            self.dropped += 1
        if self.items:
            self._ready.set()

    def take_now(self) -> tuple[int, list[T]]:
        """Everything waiting, and how many were dropped before it (both reset)."""
        taken, dropped = list(self.items), self.dropped
        self.items.clear()
        self.bytes = self.dropped = 0
        self._ready.clear()
        return dropped, taken

    async def take(self, timeout: float) -> tuple[int, list[T]]:
        """`take_now()` once something waits, or (0, []) after `timeout` seconds."""
        if not self.items:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return 0, []
        return self.take_now()
