"""Fixtures for the HAProxy router: a real HAProxy, real HTTP dynos on loopback.

- `haproxy`: HAProxy 2.6 (Debian) on free loopback ports, its files in a short temporary
  folder (unix socket paths are limited to 107 bytes), its access lines received on its
  log socket, and a `Reconciler` driving it;
- `dynos`: small aiohttp servers standing in for web dynos (`/` echoes the request,
  `/sleep?s=` answers late, `/close` hangs up without answering, `/ws` echoes).
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDictProxy

from slipway.libs.haproxy import (
    AccessRecord,
    HAProxyServer,
    LogReceiver,
    RouterPorts,
    haproxy_binary,
)
from slipway.services.network_wirer.haproxy.config import HAProxyOptions, Layout
from slipway.services.network_wirer.haproxy.reconcile import Reconciler, write_files
from slipway.services.network_wirer.pages import load
from slipway.services.network_wirer.routes import AppRoute, Upstream


def self_signed_pem(name: str) -> bytes:
    """A certificate and its key for `name`, in one PEM (HAProxy's `crt` format)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class HAProxyRouter:
    """A running HAProxy, its reconciler, its access lines and a client choosing the Host."""

    server: HAProxyServer
    options: HAProxyOptions
    reconciler: Reconciler
    session: aiohttp.ClientSession
    records: asyncio.Queue[AccessRecord] = field(default_factory=asyncio.Queue)

    @property
    def http_port(self) -> int:
        return self.server.ports.http_port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    async def get(
        self, host: str, path: str = "/", headers: Any = None
    ) -> tuple[int, str, CIMultiDictProxy[str]]:
        """GET through the router with this Host; status, body and headers."""
        merged: Any = [("Host", host), *(headers or [])]
        if isinstance(headers, dict):
            merged = {"Host": host, **headers}
        async with self.session.get(self.url(path), headers=merged) as response:
            return response.status, await response.text(), response.headers

    async def next_record(self, host: str) -> AccessRecord:
        """The next access line for `host` (others are skipped)."""
        while True:
            record = await asyncio.wait_for(self.records.get(), 10)
            if record.host == host:
                return record


@pytest.fixture
def haproxy_options() -> dict[str, Any]:
    """Overrides of HAProxyOptions for the `haproxy` fixture (a test may change them)."""
    return {}


@pytest.fixture
def pool_size() -> int:
    return 4


@pytest.fixture
def short_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="slipway-hx-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def haproxy(
    short_dir: Path, haproxy_options: dict[str, Any], pool_size: int
) -> AsyncIterator[HAProxyRouter]:
    """A real HAProxy on free loopback ports with an empty pool of `pool_size` backends."""
    try:
        haproxy_binary()
    except FileNotFoundError:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy)")
    server = HAProxyServer(short_dir, RouterPorts(0, 0, "127.0.0.1"))
    options = HAProxyOptions(data_dir=short_dir, ports=server.ports, **haproxy_options)
    options.default_certificate.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    options.default_certificate.write_bytes(self_signed_pem("localhost"))
    write_files(Layout(pool_size=pool_size, hosts={}, servers={}), options, load())
    records: asyncio.Queue[AccessRecord] = asyncio.Queue()
    receiver = LogReceiver(server.paths.log_socket, records.put_nowait)
    await receiver.start()
    await asyncio.to_thread(server.start)
    reconciler = Reconciler(server, options, load())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            yield HAProxyRouter(server, options, reconciler, session, records)
    finally:
        await reconciler.close()
        await asyncio.to_thread(server.stop)
        await receiver.close()


@dataclass
class Dynos:
    """aiohttp servers on loopback standing in for web dynos."""

    runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self, name: str = "web.1") -> Upstream:
        """A dyno answering on a free loopback port."""
        app = web.Application()

        async def echo(request: web.Request) -> web.Response:
            # HAProxy sends header names lowercased (HTTP/1.1 names are case-insensitive).
            # Repeated headers are joined, as a list-valued header reads.
            headers: dict[str, str] = {}
            for key, value in request.headers.items():
                key = key.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            return web.json_response({"dyno": name, "path": request.path_qs, "headers": headers})

        async def sleep(request: web.Request) -> web.Response:
            await asyncio.sleep(float(request.query.get("s", "1")))
            return web.json_response({"dyno": name, "slept": True})

        async def close(request: web.Request) -> web.Response:
            assert request.transport is not None
            request.transport.abort()  # hang up before any response byte
            raise asyncio.CancelledError

        async def websocket(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(f"{name}:{message.data}")
            return ws

        app.router.add_get("/sleep", sleep)
        app.router.add_get("/close", close)
        app.router.add_get("/ws", websocket)
        app.router.add_get("/{tail:.*}", echo)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return Upstream(name, f"127.0.0.1:{port}")

    async def stop(self, upstream: Upstream) -> None:
        """Stop one dyno (its port then refuses connections)."""
        for runner in list(self.runners):
            if runner.addresses and f"127.0.0.1:{runner.addresses[0][1]}" == upstream.dial:
                self.runners.remove(runner)
                await runner.cleanup()

    async def cleanup(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def dynos() -> AsyncIterator[Dynos]:
    running = Dynos()
    try:
        yield running
    finally:
        await running.cleanup()


def route(
    name: str,
    *upstreams: Upstream,
    hosts: tuple[str, ...] = (),
    maintenance: bool = False,
    crashed: bool = False,
) -> AppRoute:
    """An app's route at `<name>.localhost` (plus `hosts`)."""
    return AppRoute(
        app_id=f"id-{name}",
        app_name=name,
        hosts=(f"{name}.localhost", *hosts),
        upstreams=upstreams,
        maintenance=maintenance,
        crashed=crashed,
    )
