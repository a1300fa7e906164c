"""Blob upload and download through registry-proxy, beside the same requests sent straight
to Distribution's unix socket, same blobs, same run.

    .venv/bin/python bench/registry_proxy.py [--mib 256] [--rounds 3]

Stack: a real nats-server and registry-proxy (with its Distribution child) in this
process. Each round uploads a fresh random blob of `--mib` MiB (POST, one streamed
PATCH, PUT with the digest) and downloads it back (GET, hashed and discarded), once
through the proxy with a push credential, once straight to Distribution. The
client makes the blob up 1 MiB at a time while sending it and never holds it
whole, so the peak RSS growth of this process shows whether the proxy buffers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from slipway.contracts.registry import CREDENTIALS_ISSUE, IssueCredentials
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.logging import configure_logging
from slipway.services.registry_proxy.app import create_service
from slipway.services.registry_proxy.distribution import BASE_URL
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.state import STATE

PIECE = 1 << 20


async def _pieces(mib: int, sent: hashlib._Hash) -> AsyncIterator[bytes]:
    for _ in range(mib):
        piece = os.urandom(PIECE)
        sent.update(piece)
        yield piece


async def _round_trip(
    session: aiohttp.ClientSession, base: str, repository: str, headers: dict[str, str], mib: int
) -> tuple[float, float]:
    """Seconds to upload a fresh `mib` MiB blob, then to download it."""
    sent = hashlib.sha256()
    started = time.perf_counter()
    async with session.post(f"{base}/v2/{repository}/blobs/uploads/", headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    async with session.patch(
        base + location,
        data=_pieces(mib, sent),
        headers={**headers, "Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    digest = "sha256:" + sent.hexdigest()
    separator = "&" if "?" in location else "?"
    async with session.put(f"{base}{location}{separator}digest={digest}", headers=headers) as resp:
        assert resp.status == 201, await resp.text()
    uploaded = time.perf_counter()
    received = hashlib.sha256()
    async with session.get(f"{base}/v2/{repository}/blobs/{digest}", headers=headers) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(PIECE):
            received.update(chunk)
    assert "sha256:" + received.hexdigest() == digest
    return uploaded - started, time.perf_counter() - uploaded


async def main(mib: int, rounds: int) -> None:
    configure_logging("registry-proxy", fmt="console", level="warning")
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            await _measure(nats, Path(tmp), mib, rounds)
        finally:
            nats.stop()


async def _measure(nats: NatsServer, tmp: Path, mib: int, rounds: int) -> None:
    settings = RegistryProxySettings(
        nats_url=nats.url, home=str(tmp / "home"), registry_port=0, log_level="warning"
    )
    service = create_service(settings)
    task = asyncio.create_task(service.run(install_signals=False))
    await asyncio.wait_for(service.started.wait(), 60)
    builder = await Bus.connect(nats.url, "builder")
    try:
        creds = await builder.call(
            CREDENTIALS_ISSUE, IssueCredentials(app_id="bench", access="push")
        )
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        proxied = {"Authorization": f"Basic {token}"}
        direct_connector = service[STATE].distribution.connector()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        series: dict[str, list[float]] = {"proxy up": [], "proxy down": []}
        series |= {"direct up": [], "direct down": []}
        async with (
            aiohttp.ClientSession() as via_proxy,
            aiohttp.ClientSession(connector=direct_connector) as direct,
        ):
            for _ in range(rounds):
                up, down = await _round_trip(direct, BASE_URL, "apps/bench-direct", {}, mib)
                series["direct up"].append(up)
                series["direct down"].append(down)
                proxy = f"http://{creds.registry}"
                up, down = await _round_trip(via_proxy, proxy, "apps/bench", proxied, mib)
                series["proxy up"].append(up)
                series["proxy down"].append(down)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        await builder.close()
        service.stop()
        await task
    _report(series, mib, rounds, rss_before, rss_after)


def _report(
    series: dict[str, list[float]], mib: int, rounds: int, rss_before: int, rss_after: int
) -> None:
    print(f"blob {mib} MiB, {rounds} rounds, median MiB/s")
    rate = {name: mib / statistics.median(times) for name, times in series.items()}
    for name in ("direct up", "proxy up", "direct down", "proxy down"):
        print(f"  {name:12} {rate[name]:8.1f}")
    print(f"  upload   proxy/direct throughput {rate['proxy up'] / rate['direct up']:.2f}x")
    print(f"  download proxy/direct throughput {rate['proxy down'] / rate['direct down']:.2f}x")
    growth = (rss_after - rss_before) / 1024
    print(f"  peak RSS growth while moving {2 * rounds} blobs each way: {growth:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mib, args.rounds))
    sys.exit(0)
