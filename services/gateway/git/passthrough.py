"""Endpoints that speak something other than the JSON API: git smart HTTP and source blobs.

Their clients (git, a presigned-URL upload, the builder's fetch) send neither the
API's `Accept` header nor a bearer token, and their bodies are far larger than
the API's body limit. A handler marked `@raw` skips the `version`, `body_limit`
and `authentication` middlewares and checks what it needs itself: its own size
limit while reading, HTTP Basic or a signed URL.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

RAW: set[Handler] = set()


def raw(handler: Handler) -> Handler:
    """Mark a handler as answering outside the JSON API's middlewares."""
    RAW.add(handler)
    return handler


@web.middleware
async def passthrough(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Call a raw endpoint's handler directly; every other request goes on down the chain."""
    target = request.match_info.handler
    if target in RAW:
        return await target(request)
    return await handler(request)
