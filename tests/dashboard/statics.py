"""The dashboard's files served by the gateway's own page routes alone, in a thread.

For browser tests of the app's pure modules (auditchain.js) that need its origin and
CSP but no platform behind it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from slipway.services.gateway.http.routing import install
from slipway.services.gateway.web import pages


@contextmanager
def serving() -> Iterator[str]:
    """The URL of a loopback server answering `/` and `/dashboard/...` as the gateway does."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    install(app, pages.routes.endpoints)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
