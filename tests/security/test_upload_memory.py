"""50 parallel 200 MiB uploads: the gateway streams them to disk, its memory stays bounded.

The real supervisor runs nats-server, the keyring and the gateway as their own
processes in a temporary SLIPWAY_HOME. The uploads are generated on the fly
(nothing of the 10 GiB is stored by the test) and PUT to signed put_urls in
parallel, while the gateway's resident memory is read from /proc/<pid>/status.
The bound, 300 MiB, is a gateway at rest (~100 MiB of Python, aiohttp,
msgspec, nats) plus ~4 MiB per upload in flight: what streaming costs (socket
buffers, one 256 KiB read, one encrypted chunk). Held whole, a single upload
would be 200 MiB and fifty would be 10 GiB.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import assert_eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ACCEPT = "application/vnd.heroku+json; version=3"
MIB = 1024 * 1024
UPLOADS = 50
UPLOAD_BYTES = 200 * MIB
RSS_BOUND = 300 * MIB
_PIECE = bytes(MIB)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    home: Path
    process: subprocess.Popen[bytes]
    session: aiohttp.ClientSession
    api_url: str = ""
    token: str = ""

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Accept": ACCEPT, "Authorization": f"Bearer {self.token}"}
        async with self.session.request(
            method, self.api_url + path, json=body, headers=headers
        ) as answer:
            return answer.status, await answer.json(content_type=None)

    def gateway_pid(self) -> int:
        return int((self.home / "run" / "gateway.pid").read_text().split()[0])


async def start_platform(home: Path, pending_max: int) -> AsyncIterator[Platform]:
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_NATS_PORT": str(free_port()),
        "SLIPWAY_API_PORT": str(free_port()),
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_SOURCE_PENDING_MAX": str(pending_max),
    }
    command = [sys.executable, "-m", "slipway.libs.supervisor", "--grace", "10"]
    # Popen returns at once (the supervisor runs on its own); waiting is assert_eventually's.
    process = subprocess.Popen(  # noqa: ASYNC220
        [*command, "--only", "keyring", "--only", "gateway"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            platform = Platform(home, process, session)
            await assert_eventually(lambda: serving(platform), timeout=60, interval=0.2)
            yield platform
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        # Whatever was uploaded goes now, not with pytest's kept temporary folders.
        shutil.rmtree(home / "gateway" / "sources", ignore_errors=True)


async def serving(platform: Platform) -> None:
    try:
        bootstrap = json.loads((platform.home / "gateway" / "bootstrap.json").read_text())
        platform.api_url, platform.token = bootstrap["api_url"], bootstrap["token"]
        status, _ = await platform.call("GET", "/account")
    except (OSError, ValueError, KeyError, aiohttp.ClientError) as exc:
        raise AssertionError(f"not serving yet: {exc!r}") from None
    assert status == 200
    assert platform.gateway_pid() > 0


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Platform]:
    """The platform with the default-like limit of 10 pending sources per user."""
    async for platform in start_platform(tmp_path / "var", pending_max=10):
        yield platform


@pytest.fixture
async def roomy(tmp_path: Path) -> AsyncIterator[Platform]:
    """The platform with room for all 50 sources at once."""
    async for platform in start_platform(tmp_path / "var", pending_max=UPLOADS):
        yield platform


async def zeros(size: int) -> AsyncIterator[bytes]:
    """`size` bytes made as they are sent (the same 1 MiB piece, never a 200 MiB buffer)."""
    left = size
    while left > 0:
        piece = _PIECE if left >= len(_PIECE) else _PIECE[:left]
        left -= len(piece)
        yield piece


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of `pid`, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


async def create_app(platform: Platform) -> str:
    status, body = await platform.call("POST", "/apps", {"name": "uploads"})
    assert status == 201, body
    return "uploads"


async def test_pending_source_limit_refuses_the_excess_with_429(limited: Platform) -> None:
    """50 parallel POST /sources by one user: 10 are created, 40 get 429 saying why."""
    app = await create_app(limited)
    answers = await asyncio.gather(
        *(limited.call("POST", f"/apps/{app}/sources") for _ in range(UPLOADS))
    )
    created = [body for status, body in answers if status == 201]
    refused = [body for status, body in answers if status == 429]
    assert len(created) == 10 and len(refused) == UPLOADS - 10, [s for s, _ in answers]
    assert all("sources waiting for a build (the limit is 10)" in b["message"] for b in refused)


async def test_fifty_parallel_200mib_uploads_keep_gateway_memory_bounded(roomy: Platform) -> None:
    """50 uploads of 200 MiB at once are all stored; the gateway's RSS stays under 300 MiB."""
    app = await create_app(roomy)
    pid = roomy.gateway_pid()
    urls = []
    for _ in range(UPLOADS):
        status, body = await roomy.call("POST", f"/apps/{app}/sources")
        assert status == 201, body
        urls.append(body["source_blob"]["put_url"])
    before = memory(pid)
    peak_rss = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_rss
        while not done.is_set():
            peak_rss = max(peak_rss, memory(pid)["VmRSS"])
            await asyncio.wait([asyncio.ensure_future(done.wait())], timeout=0.2)

    async def put(url: str) -> int:
        async with roomy.session.put(url, data=zeros(UPLOAD_BYTES)) as answer:
            return answer.status

    sampler = asyncio.create_task(sample())
    statuses = await asyncio.gather(*(put(url) for url in urls))
    done.set()
    await sampler
    after = memory(pid)
    stored = sorted((roomy.home / "gateway" / "sources").glob("*.enc"))
    print(
        f"\ngateway RSS: {before['VmRSS'] / MIB:.0f} MiB before, peak sampled"
        f" {peak_rss / MIB:.0f} MiB, VmHWM {after['VmHWM'] / MIB:.0f} MiB"
        f" for {UPLOADS} uploads of {UPLOAD_BYTES // MIB} MiB"
    )
    assert statuses == [200] * UPLOADS
    assert len(stored) == UPLOADS
    assert all(path.stat().st_size > UPLOAD_BYTES for path in stored)
    assert after["VmHWM"] < RSS_BOUND
