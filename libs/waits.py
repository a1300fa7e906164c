"""Waiting for an event with a time limit, without losing a cancellation.

Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as what it
awaits completes (fixed in 3.12): a background loop may then never stop, and a service's
shutdown hangs. `asyncio.timeout` does not have the bug. Libraries a loop calls during a
pass (nats-py, our own clients) may still use wait_for, so the wait between passes also
checks whether the task was asked to stop and stops it: the one place for both.
"""

from __future__ import annotations

import asyncio


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; whether it was set. CancelledError when
    the task was cancelled, even if something during its last pass swallowed that."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
