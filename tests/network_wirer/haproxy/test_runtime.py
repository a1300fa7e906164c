"""libs/haproxy.py against a real HAProxy: private sockets, no TCP admin, runtime errors,
access lines from the log socket that a hostile request cannot bend."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiohttp
import pytest

from slipway.libs.haproxy import (
    HAProxyServer,
    RouterPorts,
    RuntimeCommandError,
    parse_access,
    starting_config,
)
from slipway.services.network_wirer.haproxy.config import HAProxyOptions
from slipway.services.network_wirer.haproxy.reconcile import Reconciler
from slipway.services.network_wirer.pages import load
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route, self_signed_pem

pytestmark = [pytest.mark.integration]


def _pids(master: int) -> set[int]:
    """The master and its workers."""
    pids = {master}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.add(int(entry.name))
    return pids


def _listening_tcp_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state whose socket one of `pids` holds."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink()
            except OSError:
                continue
            if str(target).startswith("socket:["):
                inodes.add(str(target)[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_admin_sockets_are_private_and_no_tcp_admin(haproxy: HAProxyRouter) -> None:
    """Runtime, master and log sockets are 0600 in a 0700 folder; HAProxy listens on TCP
    only for customers' HTTP and HTTPS."""
    paths = haproxy.server.paths
    assert stat.S_IMODE(paths.sockets.stat().st_mode) == 0o700
    for sock in (paths.runtime_socket, paths.master_socket, paths.log_socket):
        info = sock.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600, sock
    assert haproxy.server.process is not None
    ports = _listening_tcp_ports(_pids(haproxy.server.process.pid))
    assert ports == {haproxy.server.ports.http_port, haproxy.server.ports.https_port}


async def test_refused_runtime_commands_raise(haproxy: HAProxyRouter) -> None:
    """HAProxy's refusals become RuntimeCommandError; a second line is never sent."""
    runtime = haproxy.reconciler.runtime
    added = "add server be_0/web.1--x 127.0.0.1:9"
    await runtime.expect(added, "New server registered")
    with pytest.raises(RuntimeCommandError, match="Already exists"):
        await runtime.expect(added, "New server registered")
    with pytest.raises(RuntimeCommandError):
        await runtime.show_map("/no/such.map")
    with pytest.raises(ValueError, match="one line"):
        await runtime.command("show info\nshutdown frontend fe_http")
    # The session still works after refusals.
    assert "Name: HAProxy" in await runtime.command("show info")


async def test_hostile_request_cannot_forge_an_access_line(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """Spaces and quotes in Host or X-Request-Id stay inside their own fields."""
    await haproxy.reconciler.reconcile([route("real", await dynos.start())])
    reader, writer = await asyncio.open_connection("127.0.0.1", haproxy.http_port)
    hostile = 'evil 1 2 3 "x" \\ web.1'
    writer.write(
        f"GET /a?b=c HTTP/1.1\r\nHost: {hostile}\r\nX-Request-Id: {hostile}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 404")
    record = await haproxy.next_record(hostile.lower())
    assert (record.host, record.path, record.status, record.server) == (
        hostile.lower(),
        "/a?b=c",
        404,
        "",
    )
    assert len(record.request_id) == 36  # the hostile one was replaced


def test_parse_access_ignores_other_datagrams() -> None:
    """Anything but a whole access line in the agreed format is dropped."""
    assert parse_access(b"") is None
    assert parse_access(b"<134>Dec 3 haproxy[1]: Proxy fe_http started.") is None
    assert parse_access(b"slipway-access 1.0 127.0.0.1 GET") is None
    fields = "slipway-access x 127.0.0.1 GET - - - up be_0 s 1 2 3 200 10 -- 0"
    assert parse_access(fields.encode()) is None  # a timestamp that is not a number


async def test_starting_config_then_first_reconcile_reloads_into_routes(
    short_dir: Path, dynos: Dynos
) -> None:
    """HAProxy started before any wirer answers 503; the first pass writes the real
    configuration, reloads once, and the app routes."""
    server = HAProxyServer(short_dir, RouterPorts(0, 0, "127.0.0.1"))
    short_dir.mkdir(exist_ok=True)
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    options = HAProxyOptions(data_dir=short_dir, ports=server.ports)
    options.default_certificate.parent.mkdir(mode=0o700, parents=True)
    options.default_certificate.write_bytes(self_signed_pem("localhost"))
    await asyncio.to_thread(server.start)
    reconciler = Reconciler(server, options, load())
    url = f"http://127.0.0.1:{server.ports.http_port}/"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers={"Host": "early.localhost"}) as response:
                assert response.status == 503
                assert "starting" in await response.text()
            outcome = await reconciler.reconcile([route("early", await dynos.start())])
            assert outcome.reloaded
            async with session.get(url, headers={"Host": "early.localhost"}) as response:
                assert response.status == 200
    finally:
        await reconciler.close()
        await asyncio.to_thread(server.stop)
