"""When a dyno counts as up, and how long a crashed one waits before its next start.

A web dyno is up once the app behind its published port accepts a TCP connection
(it bound `$PORT`; see `port_accepts` for docker-proxy), and, if it declares a health
path, once that path answers below 400. Other process types are up once their
process runs. A web dyno that is not up within the boot timeout failed with
Heroku's R10; one whose process exits first crashed. Crash restarts back off
exponentially, capped, and the count starts again after a healthy period, so a
crash-looping app is bounded.

An app declares a health path with the config var `SLIPWAY_HEALTH_PATH` (for web
dynos): the scheduler reads that one value when the dyno starts, in memory only. The
URL is built from parts (`health_url`): the address and port are the dyno's, the value
only ever its path and query, so `@169.254.169.254/` or `//host/` cannot name another
host; a value that is not a path (`libs.healthpath`) is not requested at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiodocker
import aiohttp
import msgspec
from yarl import URL

from slipway.libs import healthpath

BOOT_TIMEOUT_REASON = "Error R10 (Boot timeout) -> Web process failed to bind to $PORT"


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of waiting for one dyno."""

    ok: bool
    reason: str = ""
    exit_code: int | None = None


def backoff(restarts: int, base: float, cap: float) -> float:
    """Seconds before restart number `restarts + 1`: base, 2 base, 4 base, … at most cap."""
    return float(min(cap, base * (2 ** min(restarts, 30))))


async def _exited(container: aiodocker.docker.DockerContainer) -> int | None:
    info = await container.show()
    state = info.get("State") or {}
    if state.get("Running"):
        return None
    return int(state.get("ExitCode", -1))


# docker-proxy accepts on the published port as soon as the container runs, then closes
# the connection when the app behind it does not accept: a connection still open (or
# answering) after this long reached the app.
PROBE_WAIT = 0.1


async def port_accepts(address: str, port: int) -> bool:
    """Whether the app behind a published port accepts connections (not only docker-proxy)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        data = await asyncio.wait_for(reader.read(1), PROBE_WAIT)
        return data != b""  # EOF: the proxy found nobody listening
    except TimeoutError:
        return True  # open and silent, as a server waiting for a request is
    except OSError:
        return False  # reset
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def health_url(address: str, port: int, health_path: str | None) -> URL | None:
    """The URL of the dyno's health path, or None when it declares no valid one."""
    if not health_path or not healthpath.is_valid(health_path):
        return None
    path, query = healthpath.split(health_path)
    # The authority is made by yarl from the address (IPv6 bracketed) and port; the path
    # was checked to hold only path characters, so it is passed on as it was written.
    authority = URL.build(scheme="http", host=address, port=port).raw_authority
    return URL.build(
        scheme="http", authority=authority, path=path, query_string=query, encoded=True
    )


async def _path_ok(session: aiohttp.ClientSession, url: URL) -> bool:
    try:
        # Not following redirects: the dyno must not send the platform to another host.
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=2.0), allow_redirects=False
        ) as answer:
            return answer.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def wait_healthy(
    container: aiodocker.docker.DockerContainer,
    *,
    address: str | None,
    port: int | None,
    health_path: str | None,
    boot_timeout: float,
    interval: float = 0.05,
) -> Health:
    """Wait until the dyno is up, its process exits, or the boot timeout passes."""
    deadline = time.monotonic() + boot_timeout
    async with aiohttp.ClientSession() as session:
        while True:
            exit_code = await _exited(container)
            if exit_code is not None:
                return Health(
                    ok=False, reason=f"Process exited with status {exit_code}", exit_code=exit_code
                )
            if address is None or port is None:
                return Health(ok=True)
            url = health_url(address, port, health_path)
            if await port_accepts(address, port) and (url is None or await _path_ok(session, url)):
                return Health(ok=True)
            if time.monotonic() > deadline:
                return Health(ok=False, reason=BOOT_TIMEOUT_REASON)
            await asyncio.sleep(interval)
