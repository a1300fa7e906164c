"""The gateway's shared state, reachable from every handler through `request.app[GATEWAY]`."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
from aiohttp import web

from slipway.libs.bus import Bus
from slipway.libs.storage import Database, InlineReader
from slipway.services.gateway.audit.checkpoints import Checkpointer
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.logs.shippers import ShipperHosts
from slipway.services.gateway.outbox.outbox import OutboxRelay


@dataclass
class Gateway:
    """Everything a request needs: settings, the bus, the database and the background relays."""

    settings: GatewaySettings
    bus: Bus
    db: Database  # the writer: every change goes through db.transaction()
    reader: aiosqlite.Connection  # committed data only, never blocked behind a writer
    relay: OutboxRelay
    checkpointer: Checkpointer
    # Point lookups on the hot path (tokens, apps, config versions) without aiosqlite's
    # thread hop; None where the gateway is assembled without it (tests): `reads` falls back.
    lookups: InlineReader | None = None
    api_url: str = ""
    # One config change at a time per app in this process: concurrent PATCHes queue
    # instead of racing (the version check in the transaction still guards other writers).
    config_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    # One-off attach secrets not yet used: SHA-256 of the secret → oneoff.PendingAttach.
    attach_sessions: dict[bytes, Any] = field(default_factory=dict)
    # `rendezvous://host:port` of the rendezvous listener (rendezvous.py); "" when off.
    rendezvous_url: str = ""
    # The log-shippers that log reads wait for (one per Docker host), looked up lazily.
    _shipper_hosts: ShipperHosts | None = None

    @property
    def shipper_hosts(self) -> ShipperHosts:
        if self._shipper_hosts is None:
            self._shipper_hosts = ShipperHosts(self.bus)
        return self._shipper_hosts

    @property
    def reads(self) -> InlineReader | aiosqlite.Connection:
        """Where a point lookup of committed rows goes: `lookups`, else the reader."""
        return self.lookups if self.lookups is not None else self.reader

    def config_lock(self, app_id: str) -> asyncio.Lock:
        lock = self.config_locks.get(app_id)
        if lock is None:
            lock = self.config_locks[app_id] = asyncio.Lock()
        return lock

    def web_url(self, app_name: str) -> str:
        settings = self.settings
        return f"http://{app_name}.{settings.apps_domain}:{settings.router_port}/"

    def git_url(self, app_name: str) -> str:
        return f"{self.api_url}/{app_name}.git"


GATEWAY = web.AppKey("gateway", Gateway)
# The id of the request being handled: echoed as `Request-Id`, carried on the bus, audited.
REQUEST_ID = web.RequestKey("request_id", str)
