"""Heroku's rendezvous door to one-off dynos: TLS, the secret line, then raw bytes both ways.

Heroku's clients read an `attach_url` of `rendezvous://host:port/SECRET`, open TLS to
host:port, write `SECRET\\r\\n`, drop the first line the server sends, then pipe their
input to the connection and the connection to their output; the server closes the
connection when the dyno's process has exited. A client whose input is not a terminal
writes Ctrl-D (0x04) when that input ends. This listener answers them:

- TLS and the secret line must both arrive within `HANDSHAKE_DEADLINE` seconds, the line
  in at most `MAX_LINE` bytes, and at most `MAX_WAITING` connections may be waiting for
  theirs: a slow or silent client (slowloris) holds a socket for seconds, not forever.
- A secret attaches once (`oneoff.claim`). An unknown, used or expired one gets the
  connection closed, nothing attached and nothing said.
- Accepted: `rendezvous\\r\\n` (the line clients drop), then the bridge. With a TTY every
  byte goes to the dyno's terminal, Ctrl-D included (the terminal turns it into EOF).
  Without one, Ctrl-D ends the input: the bytes before it are sent, then the dyno's
  stdin is closed. A 0x04 inside binary input therefore ends it early on this door; the
  websocket door's `{"eof": true}` has no such limit.
- The exit status is not sent: Heroku's rendezvous sends none (its CLI wraps the command
  to print it), so the connection simply closes.

TLS: a certificate for the listen address (and `rendezvous_public_host`), made at every
start and signed by the gateway's own rendezvous CA, which is made at first start; both
live in `<home>/gateway/rendezvous-tls/` (`ca.pem` is what clients trust). Not the bus CA
(it vouches for nats-server: a customer-facing key it signed could pose as the bus) and
not yet the router's internal CA (only network-wirer holds it, and it signs add-on names
only).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway.contracts import oneoff as contract
from slipway.contracts.base import encode
from slipway.contracts.oneoff import TtyFrame
from slipway.libs.service import ServiceApp
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import Gateway
from slipway.services.gateway.oneoff import oneoff

log = structlog.get_logger("slipway.gateway.rendezvous")

HANDSHAKE_DEADLINE = 10.0  # seconds for TLS, then as long again for the secret line
MAX_LINE = 256  # bytes of the secret line, its CRLF included (a secret is 43)
MAX_WAITING = 256  # connections past TLS still waiting for their line
GREETING = b"rendezvous\r\n"
EOT = b"\x04"
CHUNK = 65536
_frame = msgspec.json.Decoder(TtyFrame)
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - recognised, not bound


class Rendezvous:
    """The TLS listener; `start` answers the `rendezvous://host:port` it is reached at."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.waiting = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        settings = self.gw.settings
        context = server_context(settings)
        self._server = await asyncio.start_server(
            self._connection,
            settings.rendezvous_host,
            settings.rendezvous_port,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_DEADLINE,
            limit=MAX_LINE,
        )
        port = self._server.sockets[0].getsockname()[1]
        host = public_host(settings)
        if ":" in host:
            host = f"[{host}]"
        return f"rendezvous://{host}:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            pending = await self._authenticate(reader)
            if pending is not None:
                await self._bridge(pending, reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), HANDSHAKE_DEADLINE)

    async def _authenticate(self, reader: asyncio.StreamReader) -> oneoff.PendingAttach | None:
        """The one-off the secret line names, claimed; None (and a log line) otherwise."""
        if self.waiting >= MAX_WAITING:
            log.warning("rendezvous.refused", reason="too many connections waiting")
            return None
        self.waiting += 1
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), HANDSHAKE_DEADLINE)
        except TimeoutError:
            log.info("rendezvous.refused", reason="no secret line in time")
            return None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            log.info("rendezvous.refused", reason="no secret line (closed or too long)")
            return None
        except (ConnectionError, ssl.SSLError):
            return None
        finally:
            self.waiting -= 1
        try:
            secret = line.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            secret = ""
        pending = oneoff.claim(self.gw, secret) if secret else None
        if pending is None:
            log.info("rendezvous.refused", reason="unknown, used or expired secret")
        return pending

    async def _bridge(
        self,
        pending: oneoff.PendingAttach,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        bus = self.gw.bus
        frames = await bus.live_subscribe(contract.tty_out(pending.session))
        writer.write(GREETING)
        await bus.live_publish(contract.tty_in(pending.session), encode(TtyFrame(kind="ready")))
        log.info("rendezvous.attached", dyno=pending.dyno, tty=pending.tty)
        outbound = asyncio.create_task(_to_client(writer, frames))
        inbound = asyncio.create_task(self._from_client(reader, pending))
        try:
            await asyncio.wait({outbound, inbound}, return_when=asyncio.FIRST_COMPLETED)
            if not outbound.done():  # the client hung up first, as a closed terminal would
                close = encode(TtyFrame(kind="close"))
                await bus.live_publish(contract.tty_in(pending.session), close)
        finally:
            for task in (inbound, outbound):
                task.cancel()
            await asyncio.gather(inbound, outbound, return_exceptions=True)
        log.info("rendezvous.detached", dyno=pending.dyno)

    async def _from_client(
        self, reader: asyncio.StreamReader, pending: oneoff.PendingAttach
    ) -> None:
        """Relay the client's bytes until it hangs up (without a TTY, Ctrl-D ends input)."""
        subject = contract.tty_in(pending.session)
        publish = self.gw.bus.live_publish
        input_open = True
        while data := await _read(reader):
            if not input_open:
                continue  # after the end of input: only a hang-up matters
            if not pending.tty and EOT in data:
                before = data.split(EOT, 1)[0]
                if before:
                    await publish(subject, encode(TtyFrame(kind="data", data=before)))
                await publish(subject, encode(TtyFrame(kind="eof")))
                input_open = False
                continue
            await publish(subject, encode(TtyFrame(kind="data", data=data)))


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(CHUNK)
    except (ConnectionError, ssl.SSLError):
        return b""


async def _to_client(writer: asyncio.StreamWriter, frames: AsyncIterator[bytes]) -> None:
    async for raw in frames:
        frame = _frame.decode(raw)
        if frame.kind == "data":
            writer.write(frame.data)
            await writer.drain()
        elif frame.kind == "exit":
            return
        elif frame.kind == "error":
            writer.write(f"slipway: the dyno could not run: {frame.message}\r\n".encode())
            await writer.drain()
            return


def public_host(settings: GatewaySettings) -> str:
    """The host named in attach_urls: the public name, else the address bound."""
    if settings.rendezvous_public_host:
        return settings.rendezvous_public_host
    if settings.rendezvous_host in _WILDCARDS:
        return socket.gethostname()
    return settings.rendezvous_host


def install(service: ServiceApp, state: Callable[[], Gateway]) -> None:
    """Run the listener for the gateway's lifetime (unless `rendezvous` is off)."""

    @service.cleanup_ctx
    async def rendezvous_door(service: ServiceApp) -> AsyncIterator[None]:
        gw = state()
        if not gw.settings.rendezvous:
            yield
            return
        door = Rendezvous(gw)
        gw.rendezvous_url = await door.start()
        log.info("rendezvous.listening", url=gw.rendezvous_url)
        try:
            yield
        finally:
            gw.rendezvous_url = ""
            await door.stop()


# ---- TLS ------------------------------------------------------------------------------


def server_context(settings: GatewaySettings) -> ssl.SSLContext:
    """A server context with a fresh certificate for the listener's names."""
    folder = settings.rendezvous_tls_dir()
    hosts = [settings.rendezvous_host, public_host(settings), "127.0.0.1", "::1", "localhost"]
    cert, key = issue(folder, [h for h in dict.fromkeys(hosts) if h not in _WILDCARDS])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Slipway platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The rendezvous CA in `folder` (ca.pem, ca.key), made on first use."""
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Slipway one-off rendezvous CA"))
        .issuer_name(_name("Slipway one-off rendezvous CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A server certificate for `hosts` signed by the rendezvous CA: (cert, key) paths."""
    ca_cert, ca_key = ensure_ca(folder)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Slipway one-off rendezvous"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=397))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    _write_private(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
