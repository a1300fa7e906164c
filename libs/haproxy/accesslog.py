"""Access lines over a unix datagram socket: the format HAProxy writes, and its reader."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slipway.libs.haproxy.paths import check_socket_path, private_folder

# ---------------------------------------------------------------------------------------
# The access line: one format, written by HAProxy's `log-format`, read by `parse_access`.
# Every string a client chose (host, path, request id) is base64-encoded by HAProxy, so a
# hostile value can neither add fields nor forge a line; the rest are numbers, HAProxy's
# own flags or names the wirer chose (backends, servers, route states).
# ---------------------------------------------------------------------------------------
ACCESS_TAG = "slipway-access"
ACCESS_LOG_FORMAT = " ".join(
    [
        ACCESS_TAG,
        "%Ts.%ms",  # accept date, seconds.milliseconds
        "%ci",  # client address
        "%HM",  # method (HAProxy refuses a request line whose method is not a token)
        "%[var(txn.pathq),base64]",
        "%[var(txn.host),base64]",
        "%[var(txn.rid),base64]",
        "%[var(txn.state)]",  # the route's state from the host map: up, maint, h14, h10
        "%b",
        "%s",
        "%Tc",  # ms to connect to the dyno (-1: never connected)
        "%Tr",  # ms the dyno took to send its response headers (-1: never)
        "%Ta",  # ms the whole request was active
        "%ST",
        "%B",
        "%ts",  # termination state: who ended the session, and at which step
        "%[ssl_fc]",
        # A digest of the request's X-Slipway-Probe header ("-" without one): network-wirer's
        # uptime probes are told apart by it (config.py captures it and strips the header).
        "%[var(txn.probe)]",
    ]
)
ACCESS_FIELDS = 18
OLDER_FIELDS = 17  # lines of a HAProxy still running a configuration from before the probe


@dataclass(frozen=True)
class AccessRecord:
    """One request as HAProxy logged it, decoded (no app or error code yet)."""

    timestamp: float
    client: str
    method: str
    path: str
    host: str
    request_id: str
    state: str
    backend: str
    server: str
    connect_ms: int
    response_ms: int
    active_ms: int
    status: int
    bytes: int
    termination: str
    tls: bool
    probe: str = ""  # the marker's digest, as HAProxy logged it ("": no marker)


def _unb64(text: str) -> str:
    if text in ("", "-"):
        return ""
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def parse_access(datagram: bytes) -> AccessRecord | None:
    """Decode one log datagram written with ACCESS_LOG_FORMAT; None for anything else."""
    text = datagram.decode("ascii", "replace").strip()
    # `format raw` sends the message alone, but tolerate a syslog header in front.
    start = text.find(ACCESS_TAG + " ")
    if start < 0:
        return None
    fields = text[start:].split(" ")
    if len(fields) not in (ACCESS_FIELDS, OLDER_FIELDS):
        return None
    try:
        return AccessRecord(
            timestamp=float(fields[1]),
            client=fields[2],
            method=fields[3],
            path=_unb64(fields[4]),
            host=_unb64(fields[5]),
            request_id=_unb64(fields[6]),
            state="" if fields[7] == "-" else fields[7],
            backend=fields[8],
            server="" if fields[9] == "<NOSRV>" else fields[9],
            connect_ms=int(fields[10]),
            response_ms=int(fields[11]),
            active_ms=int(fields[12]),
            status=int(fields[13]),
            bytes=int(fields[14]),
            termination=fields[15],
            tls=fields[16] == "1",
            probe=fields[17] if len(fields) == ACCESS_FIELDS and fields[17] != "-" else "",
        )
    except ValueError:
        return None


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_record: Callable[[AccessRecord], None]) -> None:
        self.on_record = on_record

    def datagram_received(self, data: bytes, addr: object) -> None:
        record = parse_access(data)
        if record is not None:
            self.on_record(record)


class LogReceiver:
    """The unix datagram socket HAProxy logs to; each access line goes to `on_record`.

    Datagrams, not a stream: HAProxy never blocks on a slow reader (a full socket buffer
    drops lines and counts them in `show info`'s DroppedLogs), and a restarted receiver
    needs no reconnection on HAProxy's side.
    """

    def __init__(self, socket_path: Path, on_record: Callable[[AccessRecord], None]) -> None:
        self.socket_path = check_socket_path(socket_path)
        self.on_record = on_record
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        private_folder(self.socket_path.parent)
        # A socket left by a killed receiver would refuse the bind; nobody reads it anyway.
        self.socket_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old)
        # Bursts of short requests: room for a few thousand lines before any is dropped.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self.on_record), sock=sock
        )
        self._transport = transport

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.socket_path.unlink(missing_ok=True)
