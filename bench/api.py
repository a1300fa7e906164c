"""The customer API through the whole stack, beside a bare aiohttp server, same client, same run.

    .venv/bin/python bench/api.py [--requests 2000] [--concurrency 16]

Stack: a real nats-server (JetStream on disk, sync always), the keyring and the
gateway as their own processes (`python -m slipway.services.<name>`), SQLite
with synchronous=FULL. Floor: a bare aiohttp server in its own process answering
a constant JSON body on the same paths. One aiohttp client drives both over
loopback with `--concurrency` requests in flight.

Measured:
- GET /apps/{app}: token check, app + membership lookup, JSON answer;
- PATCH /apps/{app}/config-vars (config:set): decrypt the current version and
  encrypt the new one through the keyring, one transaction with the config
  version, the release, the audit entry and the outbox rows, then the relay and
  the checkpoint signer run behind it. Each in-flight worker has its own app,
  as concurrent customers would (one app's changes are serialised on purpose).

Each series runs twice: with `--concurrency` requests in flight (throughput) and with
one (latency). Issue 17's targets: GET p50 ≤ 2 ms and ≥ 0.5x the floor's throughput;
config:set p50 ≤ 10 ms. The p50 targets are judged with one request in flight: with 16
always in flight, p50 is about 16 ÷ throughput (Little's law), a throughput figure
already judged by the ratio, not the time a request takes. Both p50s are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from slipway.libs.natsserver import NatsServer

ACCEPT = "application/vnd.heroku+json; version=3"
FLOOR_BODY = json.dumps(
    {
        "id": "00000000-0000-4000-8000-000000000000",
        "name": "bench-0",
        "maintenance": False,
        "team": {"id": "t", "name": "bench"},
    }
).encode()


@dataclass(frozen=True)
class Result:
    """One measured series."""

    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(
    name: str, total: int, concurrency: int, one: Callable[[int], Awaitable[int]]
) -> Result:
    """Run `total` requests, `concurrency` at a time (worker w sends `one(w)`)."""
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def worker(index: int) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            status = await one(index)
            latencies.append(time.perf_counter() - started)
            errors += status >= 400

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return Result(name, total / elapsed, cuts[49] * 1000, cuts[98] * 1000, errors)


# ---- the floor: a bare aiohttp server ----------------------------------------------------------


def serve_floor(port: int) -> None:
    """The floor process: constant JSON answers, no middleware, no database."""

    async def constant(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=FLOOR_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/apps/{app}", constant)
    app.router.add_patch("/apps/{app}/config-vars", constant)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---- the stack -----------------------------------------------------------------------------------


@contextmanager
def processes(root: Path) -> Iterator[tuple[str, str, str]]:
    """nats-server, keyring, gateway and the floor; yields (api url, admin token, floor url)."""
    nats = NatsServer(root / "nats")
    nats.start()
    home = root / "home"
    api_port, floor_port = free_port(), free_port()
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": nats.url,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_API_PORT": str(api_port),
        "SLIPWAY_LOG_FORMAT": "json",
        # The limiter runs (it is on the measured path) but never refuses the benchmark.
        "SLIPWAY_API_RATE_LIMIT": str(10**9),
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        for module in ("keyring", "gateway"):
            with (root / f"{module}.log").open("ab") as log:
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", f"slipway.services.{module}"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        children.append(
            subprocess.Popen([sys.executable, __file__, "--floor", str(floor_port)], env=env)
        )
        bootstrap = home / "gateway" / "bootstrap.json"
        deadline = time.monotonic() + 60
        while not bootstrap.exists() or not _listening(floor_port):
            if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                raise RuntimeError(f"the stack did not start; see the logs in {root}")
            time.sleep(0.05)
        credentials = json.loads(bootstrap.read_text())
        yield credentials["api_url"], credentials["token"], f"http://127.0.0.1:{floor_port}"
    finally:
        for child in reversed(children):
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        nats.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def measure(api: str, token: str, floor: str, total: int, concurrency: int) -> list[Result]:
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(method: str, url: str, body: Any = None) -> int:
            async with session.request(method, url, json=body) as response:
                await response.read()
                return response.status

        apps = [f"bench-{i}" for i in range(concurrency)]
        for name in apps:
            assert await call("POST", f"{api}/apps", {"name": name}) == 201
        counter = iter(range(10**9))

        def config_set(base: str) -> Callable[[int], Awaitable[int]]:
            async def one(worker: int) -> int:
                key = f"KEY_{next(counter) % 40}"
                url = f"{base}/apps/{apps[worker]}/config-vars"
                return await call("PATCH", url, {key: "x" * 64})

            return one

        def app_info(base: str) -> Callable[[int], Awaitable[int]]:
            async def one(worker: int) -> int:
                return await call("GET", f"{base}/apps/{apps[worker]}")

            return one

        results = []
        for label, factory in (("GET /apps/{app}", app_info), ("PATCH config-vars", config_set)):
            for side, base in (("floor", floor), ("gateway", api)):
                await drive("warm-up", min(200, total), concurrency, factory(base))
                results.append(
                    await asyncio.wait_for(
                        drive(f"{label} [{side}]", total, concurrency, factory(base)), 300
                    )
                )
                one_total = max(total // 4, 100)
                results.append(
                    await asyncio.wait_for(
                        drive(f"{label} [{side}] @1", one_total, 1, factory(base)), 300
                    )
                )
        return results


def report(results: list[Result], total: int, concurrency: int) -> None:
    print(f"{total} requests per series, {concurrency} in flight, loopback, one client")
    print(f"{'series':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(f"{r.name:34} {r.rate:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}")
    by_name = {r.name: r for r in results}
    for label in ("GET /apps/{app}", "PATCH config-vars"):
        floor, gateway = by_name[f"{label} [floor]"], by_name[f"{label} [gateway]"]
        print(
            f"{label}: gateway/floor throughput {gateway.rate / floor.rate:.2f},"
            f" p50 x{gateway.p50_ms / floor.p50_ms:.1f}, p99 x{gateway.p99_ms / floor.p99_ms:.1f}"
        )
    get, get_floor = by_name["GET /apps/{app} [gateway]"], by_name["GET /apps/{app} [floor]"]
    get_one = by_name["GET /apps/{app} [gateway] @1"]
    patch_one = by_name["PATCH config-vars [gateway] @1"]
    patch = by_name["PATCH config-vars [gateway]"]
    print("targets (issue 17 item 9):")
    for text, ok in (
        (f"GET p50 {get_one.p50_ms:.2f} ms (1 in flight) <= 2", get_one.p50_ms <= 2.0),
        (
            f"GET throughput {get.rate / get_floor.rate:.2f}x floor ({concurrency} in flight)"
            " >= 0.5",
            get.rate / get_floor.rate >= 0.5,
        ),
        (f"config:set p50 {patch_one.p50_ms:.2f} ms (1 in flight) <= 10", patch_one.p50_ms <= 10),
    ):
        print(f"  {text}: {'met' if ok else 'NOT met'}")
    print(
        f"  (with {concurrency} in flight: GET p50 {get.p50_ms:.2f} ms,"
        f" config:set p50 {patch.p50_ms:.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        serve_floor(args.floor)
        return
    with (
        tempfile.TemporaryDirectory(prefix="slipway-bench-api-") as tmp,
        processes(Path(tmp)) as (api, token, floor),
    ):
        results = asyncio.run(measure(api, token, floor, args.requests, args.concurrency))
    report(results, args.requests, args.concurrency)


if __name__ == "__main__":
    main()
