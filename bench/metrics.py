"""The cost of the metrics on the gateway's request path: metrics on and off, same run.

    .venv/bin/python bench/metrics.py [--requests 4000] [--rounds 8]

One stack (a real nats-server, the keyring and the gateway as their own processes, as
bench/api.py starts them); the gateway is restarted between series, alternately with the
default metrics and with `SLIPWAY_METRICS=off`, on the same home, port and database. Two
gateways side by side were tried first: with metrics off on both, they differed by ~10 %
at 16 in flight (which process got which core), more than the target. Restarting the
same one evens that out over the rounds. Each round starts with the other setting.

Each series drives GET /apps/{app} with 16 requests in flight (throughput) and with one
(latency), after a warm-up; each figure is the median over the rounds. While metrics are
on, the gateway's socket is scraped once a second, as Prometheus would, so the scrape's
own cost is on the measured path too. The last line times the middleware's metrics work
itself in this process: the cost the side-by-side figures measure from outside. The
gateway's own CPU time per request (from /proc) is printed beside the wall-clock figures:
on a machine shared with other work it is the steadiest of the three.

Issue 20's target: the metrics cost at most 5 % (throughput at 16 in flight, and p50 at
one in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# Run as a script (`python bench/metrics.py`): the repository root makes `bench.api` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api import ACCEPT, Result, _listening, drive, free_port
from slipway.libs.metrics import Metrics
from slipway.libs.natsserver import NatsServer

TARGET = 0.05
CONCURRENCY = 16
SIDES = ("on", "off")


@dataclass
class Platform:
    """nats-server and the keyring, running; the gateway started per series."""

    root: Path
    env: dict[str, str]
    port: int
    gateway: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return Path(self.env["SLIPWAY_HOME"]) / "gateway" / "metrics.sock"

    def start_gateway(self, metrics: str) -> None:
        """Start the gateway with SLIPWAY_METRICS=`metrics`; return once it answers."""
        self.stop_gateway()
        with (self.root / "gateway.log").open("ab") as log:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "slipway.services.gateway"],
                env={**self.env, "SLIPWAY_METRICS": metrics},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not _listening(self.port):
            if time.monotonic() > deadline or self.gateway.poll() is not None:
                raise RuntimeError(f"the gateway did not start; see {self.root}/gateway.log")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the running gateway process has used so far."""
        assert self.gateway is not None
        fields = Path(f"/proc/{self.gateway.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime, the 14th and 15th fields (after "pid (comm)"), in clock ticks.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            try:
                self.gateway.wait(30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
            self.gateway = None


@contextmanager
def platform(root: Path) -> Iterator[Platform]:
    """nats-server and the keyring for the whole run; the gateway's environment ready."""
    nats = NatsServer(root / "nats")
    nats.start()
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": nats.url,
        "SLIPWAY_HOME": str(root / "home"),
        "SLIPWAY_LOG_FORMAT": "json",
        # The limiter runs (it is on the measured path) but never refuses the benchmark.
        "SLIPWAY_API_RATE_LIMIT": str(10**9),
    }
    made = Platform(root, env, free_port())
    env["SLIPWAY_API_PORT"] = str(made.port)
    with (root / "keyring.log").open("ab") as log:
        keyring = subprocess.Popen(
            [sys.executable, "-m", "slipway.services.keyring"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield made
    finally:
        made.stop_gateway()
        keyring.terminate()
        keyring.wait(30)
        nats.stop()


async def scrape_every_second(socket: Path, stop: asyncio.Event) -> int:
    """Scrape `socket` once a second until `stop`; how many scrapes answered 200."""
    answered = 0
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            async with session.get("http://metrics/metrics") as answer:
                await answer.read()
                answered += answer.status == 200
            try:
                async with asyncio.timeout(1.0):
                    await stop.wait()
            except TimeoutError:
                pass
    return answered


async def series(
    platform: Platform, token: str, side: str, total: int
) -> tuple[list[Result], int, float]:
    """Warm up, then GET /apps/{app} at 16 and at 1 in flight; the results, the scrapes and
    the gateway's CPU seconds per request over both."""
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(worker: int) -> int:
            async with session.get(f"{platform.url}/apps/bench-{worker}") as response:
                await response.read()
                return response.status

        app_info: Callable[[int], Awaitable[int]] = one
        await drive("warm-up", min(500, total), CONCURRENCY, app_info)
        stop = asyncio.Event()
        scraper = (
            asyncio.create_task(scrape_every_second(platform.socket, stop))
            if side == "on"
            else None
        )
        results = []
        cpu_before, requests = platform.cpu_seconds(), 0
        for in_flight, count in ((CONCURRENCY, total), (1, max(total // 4, 200))):
            name = f"GET /apps/{{app}} metrics {side} @{in_flight}"
            results.append(await drive(name, count, in_flight, app_info))
            requests += count
        cpu = (platform.cpu_seconds() - cpu_before) / requests
        stop.set()
        scrapes = await scraper if scraper is not None else 0
        return results, scrapes, cpu


async def create_apps(platform: Platform, token: str) -> None:
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(CONCURRENCY):
            async with session.post(f"{platform.url}/apps", json={"name": f"bench-{i}"}) as r:
                assert r.status == 201, await r.text()


def measure(
    platform: Platform, total: int, rounds: int
) -> tuple[dict[str, list[Result]], dict[str, list[float]]]:
    """Alternate the gateway's setting round after round; every Result by series name, and
    the gateway's CPU seconds per request by side."""
    platform.start_gateway("on")
    bootstrap = Path(platform.env["SLIPWAY_HOME"]) / "gateway" / "bootstrap.json"
    deadline = time.monotonic() + 60
    while not bootstrap.exists():  # written just after the API starts listening
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {bootstrap}; see {platform.root}/gateway.log")
        time.sleep(0.05)
    token = json.loads(bootstrap.read_text())["token"]
    asyncio.run(create_apps(platform, token))
    results: dict[str, list[Result]] = {}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    scrapes = 0
    for round_ in range(rounds):
        for side in SIDES if round_ % 2 == 0 else tuple(reversed(SIDES)):
            platform.start_gateway(side)
            found, scraped, per_request = asyncio.run(series(platform, token, side, total))
            scrapes += scraped
            cpu[side].append(per_request)
            for result in found:
                results.setdefault(result.name, []).append(result)
    if not scrapes:
        raise RuntimeError("the metrics socket never answered: the 'on' side was not measured")
    return results, cpu


def observe_cost(calls: int = 200_000) -> float:
    """Seconds the gateway's middleware spends per request on metrics (counter + histogram),
    timed in this process."""
    http = Metrics("gateway").enable_http()
    assert http is not None
    started = time.perf_counter()
    for _ in range(calls):
        http.observe("GET", "/apps/{app}", 200, 0.0004)
    return (time.perf_counter() - started) / calls


def report(
    results: dict[str, list[Result]], cpu: dict[str, list[float]], total: int, rounds: int
) -> None:
    print(f"GET /apps/{{app}}, {total} requests per series at 16 in flight, {rounds} rounds")
    print(
        f"{'series (median of rounds)':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    )
    medians: dict[str, tuple[float, float]] = {}
    for name, found in results.items():
        rate = statistics.median(r.rate for r in found)
        p50 = statistics.median(r.p50_ms for r in found)
        p99 = statistics.median(r.p99_ms for r in found)
        errors = sum(r.errors for r in found)
        medians[name] = (rate, p50)
        print(f"{name:40} {rate:9.0f} {p50:8.3f} {p99:8.3f} {errors:7d}")
    on16, off16 = (medians[f"GET /apps/{{app}} metrics {s} @16"] for s in SIDES)
    on1, off1 = (medians[f"GET /apps/{{app}} metrics {s} @1"] for s in SIDES)
    throughput_cost = off16[0] / on16[0] - 1
    latency_cost = on1[1] / off1[1] - 1
    cpu_on, cpu_off = (statistics.median(cpu[side]) for side in SIDES)
    cpu_cost = cpu_on / cpu_off - 1
    print(f"throughput on/off at 16 in flight: {on16[0] / off16[0]:.3f}")
    print(f"p50 on/off at 1 in flight: {on1[1] / off1[1]:.3f}")
    print(
        f"gateway CPU per request: on {cpu_on * 1e6:.0f} us, off {cpu_off * 1e6:.0f} us"
        f" (on/off {cpu_on / cpu_off:.3f}; other processes' load hardly moves it)"
    )
    for text, cost in (
        ("throughput", throughput_cost),
        ("p50 latency", latency_cost),
        ("gateway CPU per request", cpu_cost),
    ):
        verdict = "met" if cost <= TARGET else "NOT met"
        print(f"  metrics cost, {text}: {cost * 100:+.1f} % (target <= 5 %: {verdict})")
    per_request = observe_cost()
    print(
        f"in-process: {per_request * 1e6:.2f} us of metrics per request ="
        f" {per_request * 1e3 / off1[1] * 100:.2f} % of the off side's p50 at 1 in flight"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="slipway-bench-metrics-") as tmp,
        platform(Path(tmp)) as running,
    ):
        results, cpu = measure(running, args.requests, args.rounds)
    report(results, cpu, args.requests, args.rounds)


if __name__ == "__main__":
    main()
