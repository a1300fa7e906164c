"""HAProxy's runtime API: one persistent `prompt` session against a connection per command.

    .venv/bin/python bench/haproxy_runtime.py [--commands 2000]

Both drive the same HAProxy (Debian 2.6, started here on free loopback ports) with the
same `set map` commands, one after the other, as the reconciler sends them; then the
same entries as `add map` payloads of 8 KB (what the reconciler sends for new hosts).
Prints each figure and its ratio to the session's.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from slipway.libs.haproxy import HAProxyServer, RouterPorts, Runtime
from slipway.services.network_wirer.haproxy.config import HAProxyOptions, Layout
from slipway.services.network_wirer.haproxy.reconcile import map_payloads, write_files
from slipway.services.network_wirer.pages import load


async def _per_connection(socket_path: Path, command: str) -> str:
    """The simplest client: connect, send one line, read until HAProxy closes."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    writer.write(command.encode() + b"\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer.decode()


async def run(commands: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="slipway-hxb-"))
    try:
        server = HAProxyServer(folder, RouterPorts(0, 0, "127.0.0.1"))
        options = HAProxyOptions(data_dir=folder, ports=server.ports)
        options.default_certificate.parent.mkdir(mode=0o700, parents=True)
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.network_wirer.haproxy.conftest import self_signed_pem

        options.default_certificate.write_bytes(self_signed_pem("localhost"))
        hosts = {f"app{i}.localhost": "be_0:up" for i in range(commands)}
        write_files(Layout(pool_size=1, hosts=hosts, servers={}), options, load())
        server.start()
        try:
            runtime = Runtime(server.paths.runtime_socket)
            path = options.map_path
            started = time.perf_counter()
            for host in hosts:
                await runtime.expect(f"set map {path} {host} be_0:h14")
            session = time.perf_counter() - started

            started = time.perf_counter()
            for host in hosts:
                answer = await _per_connection(
                    server.paths.runtime_socket, f"set map {path} {host} be_0:up"
                )
                assert not answer.strip(), answer
            separate = time.perf_counter() - started

            await runtime.expect(f"clear map {path}")
            started = time.perf_counter()
            for payload in map_payloads(f"{host} be_0:up\n" for host in hosts):
                await runtime.expect(f"add map {path}", payload=payload)
            bulk = time.perf_counter() - started
            assert len(await runtime.show_map(str(path))) == commands
            await runtime.close()
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per = 1e6 / commands
    print(f"{commands} set map, one prompt session:     {session * per:7.1f} µs/command  (1.00)")
    print(
        f"{commands} set map, a connection each:      {separate * per:7.1f} µs/command"
        f"  ({separate / session:.2f})"
    )
    print(
        f"{commands} entries, add map, 8 KB payloads:{bulk * per:7.1f} µs/entry    "
        f"  ({bulk / session:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.commands))


if __name__ == "__main__":
    main()
