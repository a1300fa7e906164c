"""Waiting for an event with a time limit, without losing a cancellation.

Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the
awaited event is set (fixed in 3.12): a background loop waiting that way between passes
may then never stop, and a service's shutdown hangs. `asyncio.timeout` does not have the
bug; this is the one place the idiom lives.
"""

from __future__ import annotations

import asyncio


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; whether it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
