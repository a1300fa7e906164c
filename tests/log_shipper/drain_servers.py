"""Drain endpoints a test starts on loopback: a syslog TLS server and an HTTPS server.

Both use a self-signed certificate made for the test; the log-shipper trusts it
through its `drain_ca_file` setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG (RFC 5424, no structured data)
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) - - (?P<msg>.*)$",
    re.S,
)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "drain.crt", folder / "drain.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SyslogServer:
    """Collects RFC 6587 octet-counted frames; a malformed frame is recorded as an error."""

    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = await reader.readuntil(b" ")
                if not length[:-1].isdigit():
                    self.errors.append(f"bad length prefix {length!r}")
                    return
                body = await reader.readexactly(int(length[:-1]))
                self.messages.append(body.decode())
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def syslog_server(
    tls: ssl.SSLContext, port: int = 0
) -> AsyncIterator[tuple[SyslogServer, int]]:
    collector = SyslogServer()
    server = await asyncio.start_server(collector.handle, "127.0.0.1", port, ssl=tls)
    bound = server.sockets[0].getsockname()[1]
    try:
        yield collector, int(bound)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


@dataclass
class HttpsDrain:
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def https_server(tls: ssl.SSLContext) -> AsyncIterator[tuple[HttpsDrain, int]]:
    collector = HttpsDrain()
    app = web.Application()
    app.router.add_post("/logs", collector.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield collector, int(port)
    finally:
        await runner.cleanup()


def split_frames(body: bytes) -> list[str]:
    """The messages of an octet-counted body; AssertionError if the framing is wrong."""
    out: list[str] = []
    while body:
        length, _, rest = body.partition(b" ")
        assert length.isdigit(), body[:40]
        size = int(length)
        assert len(rest) >= size, (size, len(rest))
        out.append(rest[:size].decode())
        body = rest[size:]
    return out
