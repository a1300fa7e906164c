"""Raw Docker Engine API requests through aiodocker, with the response always let go.

aiodocker's `_query` hands the caller a response it never releases: a caller
that stops reading early (an error, a bound reached, a cancelled follower)
leaves its connection to be found by the garbage collector, which warns about
it at some later, unrelated moment. Every raw request goes through `query`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp


@contextlib.asynccontextmanager
async def query(
    docker: aiodocker.Docker, path: str, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The engine's response to one request; released (or closed, if unread) on the way out."""
    async with docker._query(path, **kwargs) as response, response:
        yield response
