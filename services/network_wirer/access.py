"""The router's access lines: Caddy writes JSON logs to our unix socket, we publish RouterAccess.

Caddy's `net` log writer sends its access log here (routes.py sets it up):
`http.log.access.router` "handled request" lines with the method, host, URI,
status, size, duration, client address, the response's `X-Request-Id` /
`X-Router-Error`, and in `user_id` the name of the dyno that answered (a `map`
handler in each app's route turns the upstream's address into it). The host
becomes the app. Records go to `contracts.logs.router_subject(app_id)` on core
NATS: they hold customer data (paths, addresses), so nothing here is stored.

The listener is a unix socket (0600, in a 0700 folder), not a loopback port: it has no
authentication, and anyone who could connect could write forged router lines into any
app's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from slipway.contracts.logs import RouterAccess
from slipway.libs.caddy import private_folder
from slipway.services.network_wirer.routes import (
    ACCESS_LOG_NAME,
    ERROR_HEADER,
    REQUEST_ID_HEADER,
    AppRoute,
    apps_by_host,
)

log = structlog.get_logger("slipway.network_wirer.access")

Publish = Callable[[RouterAccess], Awaitable[None]]


def _first(headers: Any, name: str) -> str:
    if not isinstance(headers, dict):
        return ""
    for key, values in headers.items():
        if key.lower() == name.lower() and isinstance(values, list) and values:
            return str(values[0])
    return ""


class AccessJoiner:
    """Turns Caddy's log records into RouterAccess records (pure: no I/O)."""

    def __init__(self) -> None:
        self._hosts: dict[str, str] = {}

    def update(self, routes: Iterable[AppRoute]) -> None:
        """Learn which app each hostname belongs to."""
        self._hosts = apps_by_host(routes)

    def record(self, entry: dict[str, Any]) -> RouterAccess | None:
        """Turn one JSON log record into an access record, if it is one of an app's."""
        if entry.get("logger", "") != ACCESS_LOG_NAME:
            return None
        request = entry.get("request") or {}
        host = str(request.get("host", "")).lower()
        app_id = self._hosts.get(host) or self._hosts.get(host.rsplit(":", 1)[0])
        if app_id is None:
            return None
        resp_headers = entry.get("resp_headers")
        rid = _first(resp_headers, REQUEST_ID_HEADER) or _first(
            request.get("headers"), REQUEST_ID_HEADER
        )
        return RouterAccess(
            app_id=app_id,
            timestamp=float(entry.get("ts", 0.0)),
            method=str(request.get("method", "")),
            path=str(request.get("uri", "")),
            host=host,
            request_id=rid,
            fwd=str(request.get("remote_ip") or request.get("remote_addr", "")),
            dyno=str(entry.get("user_id") or ""),
            connect_ms=0,
            service_ms=round(float(entry.get("duration", 0.0)) * 1000),
            status=int(entry.get("status", 0)),
            bytes=int(entry.get("size", 0)),
            protocol="https" if request.get("tls") else "http",
            code=_first(resp_headers, ERROR_HEADER),
        )


class AccessListener:
    """A unix socket server Caddy's log writer connects to; only its owner can."""

    def __init__(self, publish: Publish, socket_path: Path) -> None:
        self.publish = publish
        self.socket_path = socket_path
        self.joiner = AccessJoiner()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        """Listen on the socket; returns its address for Caddy's configuration."""
        private_folder(self.socket_path.parent)
        # A socket left by a killed wirer would refuse the bind; nobody answers it anyway.
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        self.socket_path.chmod(0o600)
        return f"unix/{self.socket_path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                await self._line(line)
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # Caddy reconnects; a torn line is one lost access record
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _line(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if not isinstance(entry, dict):
            return
        access = self.joiner.record(entry)
        if access is not None:
            try:
                await self.publish(access)
            except Exception as exc:  # a lost access line must never stop the listener
                log.warning("access.publish_failed", error=repr(exc))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Closing the connections ends each reader's loop (cancelling would be logged).
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self.socket_path.unlink(missing_ok=True)
