"""The router's cost: a hello dyno hit directly, through HAProxy and through nginx, same run.

    .venv/bin/python bench/router.py [--duration 5] [--connections 16] [--threads 2]
    .venv/bin/python bench/router.py --churn [--changes 30]

One container FROM slipway/stack-run:bookworm runs a Node.js hello server on $PORT
(5000) on Docker's bridge. Every path reaches it at its container address, as the router
does for dynos on its own host (routes.dial_of); a published port on 127.0.0.1 would put
Docker's userland proxy (about 30 us of CPU per request) on every path. With wrk (Debian)
for `--duration` seconds each, at 1 app and at `--apps` apps (every app routed to the
same dyno; wrk asks for the last one, the worst case for a router that scans):

- direct:     wrk → the dyno's address and $PORT;
- haproxy:    wrk → HAProxy (Debian 2.6), Slipway's router, driven by network-wirer's
              code: the boot configuration (haproxy/config.py) and the runtime-API reconciler
              (haproxy/reconcile.py), its access log sent to a unix socket read here, as
              in production; health checks off (10,000 servers on one bench dyno would be
              2,000 checks per second aimed at the dyno being measured);
- nginx:      wrk → nginx (Dokku's choice) set up the same way: host match (one server
              block per app), upstream keepalive, X-Request-Id / X-Forwarded-*, retry on
              connection error, access log off.

Prints requests/s, p50 and p99 for each, the ratios against direct, and the CPU time the
proxy's processes spent per request, read the same way for every proxy (/proc utime +
stime of the master and its workers): a figure other load on the machine barely moves.
Targets (issue 16): router CPU ≤ 30 µs per request; at `--apps` apps within 10 % of the
1-app figure; ≤ 0.3 ms added p50 over direct. Everything shares the machine's cores with
wrk and the dyno, as it would in one box.

The added p50 is judged from a second wrk run per path with one connection (`p50@1c`),
well below saturation: with `--connections` requests always in flight, p50 is about
connections ÷ throughput (Little's law), so the saturated "+p50" is the throughput lost
(already shown as req/s and CPU), not the time the router adds to a request. Both are
printed.

`--churn` measures HAProxy's route changes instead (dynos are small servers in this
process; no container): the latency from the start of a reconcile pass until a client
sees an app's new dyno, p50/p99 at 100, 1,000 and 10,000 apps, and the time for 1,000
apps created then destroyed at 20 events/s to be fully reflected (target ≤ 2 s after the
last event; afterwards every destroyed app's host must answer 404), and one route change
a second for `--load-seconds` (60) while wrk loads the app (target: no failed request).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from slipway.libs.haproxy import HAProxyServer, RouterPorts, free_port
from slipway.services.network_wirer.ca import RouterCA
from slipway.services.network_wirer.haproxy.config import HAProxyOptions, Layout
from slipway.services.network_wirer.haproxy.reconcile import Reconciler, write_files
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routes import AppRoute, Upstream

RUN_STACK = "slipway/stack-run:bookworm"
HELLO_JS = """
const http = require("http");
http.createServer((req, res) => {
  res.writeHead(200, {"Content-Type": "text/plain", "Content-Length": 12});
  res.end("Hello, world");
}).listen(Number(process.env.PORT), "0.0.0.0");
"""
NGINX_CONF = """
worker_processes 2;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp;
  # One exact name per app: nginx hashes them, so the lookup does not grow with the count.
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  upstream dynos {{ server {dyno} max_fails=1 fail_timeout=10s; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} default_server;
    return 404;
  }}
{servers}
}}
"""
NGINX_SERVER = """  server {{
    listen 127.0.0.1:{port};
    server_name {host};
    location / {{
      proxy_pass http://dynos;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_next_upstream error timeout;
      proxy_connect_timeout 5s;
      proxy_read_timeout 30s;
      add_header X-Request-Id $request_id;
    }}
  }}
"""
CPU_TARGET_US = 30.0
SCALE_TOLERANCE = 0.10
ADDED_P50_TARGET_MS = 0.3


def app_name(index: int) -> str:
    return f"app{index:05d}"


def last_host(apps: int) -> str:
    """The host wrk asks for: the last app's (last in name order, as routes.py sorts)."""
    return f"{app_name(apps - 1)}.localhost"


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # the proxy's CPU time per request: independent of other load
    light_p50_ms: float = 0.0  # p50 with one connection: the latency a request sees


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (nginx's and HAProxy's workers)."""
    found = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    name: str, url: str, host: str, args: argparse.Namespace, pids: list[int] | None = None
) -> Result:
    """Run wrk for the duration; parse requests/s and the latency percentiles.

    With `pids`, also the CPU those processes spent per request during the run.
    """
    cpu_before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-H",
            f"Host: {host}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=args.duration + 30,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(g) for g in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (cpu_seconds(pids) - cpu_before) / requests * 1e6 if pids and requests else 0.0
    return Result(name, rate, p50, p99, count, cpu_us)


def start_dyno(tag: str) -> tuple[str, str]:
    """Build the hello image and run one container; returns (container id, "ip:5000")."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in {
            "Dockerfile": (
                f'FROM {RUN_STACK}\nCOPY hello.js /app/hello.js\nCMD ["node", "/app/hello.js"]\n'
            ),
            "hello.js": HELLO_JS,
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=buffer.getvalue(),
        check=True,
        capture_output=True,
    )
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-e", "PORT=5000", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dyno = f"{address}:5000"
    wait_http(f"http://{dyno}/")
    return container, dyno


def wait_http(url: str, host: str | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200")
        time.sleep(0.1)


# nginx --------------------------------------------------------------------------------


def start_nginx(workdir: Path, dyno: str, apps: int) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx not found: scripts/up installs it (apt-get install -y nginx)")
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    servers = "".join(
        NGINX_SERVER.format(port=port, host=f"{app_name(i)}.localhost") for i in range(apps)
    )
    conf.write_text(NGINX_CONF.format(prefix=workdir, dyno=dyno, port=port, servers=servers))
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(workdir)], stderr=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{port}/", last_host(apps), timeout=120)
    return process, port


# HAProxy ------------------------------------------------------------------------------


def haproxy_routes(apps: int, upstream: Upstream) -> list[AppRoute]:
    return [
        AppRoute(app_name(i), app_name(i), (f"{app_name(i)}.localhost",), (upstream,))
        for i in range(apps)
    ]


def log_reader(path: Path) -> socket.socket:
    """HAProxy's access-log socket, read and dropped in a thread (network-wirer reads it
    in production; unread, HAProxy's sends would fail cheaper than they do)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock.bind(str(path))

    def drain() -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            return  # closed at the end of the run

    threading.Thread(target=drain, daemon=True).start()
    return sock


@dataclass
class HAProxyRouter:
    server: HAProxyServer
    options: HAProxyOptions
    log: socket.socket

    @property
    def port(self) -> int:
        return self.server.ports.http_port

    def stop(self) -> None:
        self.server.stop()
        self.log.close()


def start_haproxy(folder: Path, check_interval: float = 0.0) -> HAProxyRouter:
    """HAProxy on free loopback ports with network-wirer's boot configuration, empty."""
    server = HAProxyServer(folder, RouterPorts(0, 0, "127.0.0.1"))
    options = HAProxyOptions(data_dir=folder, ports=server.ports, check_interval=check_interval)
    leaf = RouterCA.load_or_create(folder / "state").issue(["router.localhost"])
    options.default_certificate.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    options.default_certificate.write_text(leaf.pem)
    write_files(Layout(pool_size=16, hosts={}, servers={}), options, load_pages())
    log = log_reader(server.paths.log_socket)
    server.start()
    return HAProxyRouter(server, options, log)


def route_haproxy(router: HAProxyRouter, routes: list[AppRoute]) -> float:
    """One reconciler pass that routes `routes` (it reloads once to grow the pool); seconds."""

    async def run() -> None:
        reconciler = Reconciler(router.server, router.options, load_pages())
        try:
            await reconciler.reconcile(routes)
        finally:
            await reconciler.close()

    started = time.monotonic()
    asyncio.run(run())
    wait_http(f"http://127.0.0.1:{router.port}/", routes[-1].hosts[0])
    return time.monotonic() - started


# The throughput run -------------------------------------------------------------------


def report(results: list[Result], args: argparse.Namespace, notes: list[str]) -> None:
    direct = results[0]
    print(
        f"wrk {args.duration}s x {args.rounds} interleaved rounds (median per path), "
        f"{args.connections} connections, {args.threads} threads, loopback; the machine is"
        " shared (2 cores): rates move with other load, CPU per request barely"
    )
    columns = (
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "x direct",
        "+p50 ms",
        "p50@1c",
        "+p50@1c",
        "CPU us/req",
    )
    print(f"{'path':17} " + " ".join(f"{c:>9}" for c in columns))
    for r in results:
        ratio = r.rate / direct.rate
        print(
            f"{r.name:17} {r.rate:9.0f} {r.p50_ms:9.3f} {r.p99_ms:9.3f} {r.errors:9d} "
            f"{ratio:9.2f} {r.p50_ms - direct.p50_ms:9.3f} {r.light_p50_ms:9.3f} "
            f"{r.light_p50_ms - direct.light_p50_ms:9.3f} "
            + (f"{r.cpu_us:10.1f}" if r.cpu_us else f"{'-':>10}")
        )
    by_name = {r.name: r for r in results}
    print("targets (issue 16):")
    for proxy in ("haproxy", "nginx"):
        one, many = by_name.get(proxy), by_name.get(f"{proxy}@{args.apps}")
        if one is None:
            continue
        verdicts = [
            _verdict(
                f"CPU {one.cpu_us:.1f} us/req <= {CPU_TARGET_US:.0f}", one.cpu_us <= CPU_TARGET_US
            ),
            _verdict(
                f"+p50 at 1 connection {one.light_p50_ms - direct.light_p50_ms:.3f} ms"
                f" <= {ADDED_P50_TARGET_MS} (saturated: {one.p50_ms - direct.p50_ms:+.3f} ms)",
                one.light_p50_ms - direct.light_p50_ms <= ADDED_P50_TARGET_MS,
            ),
        ]
        if many is not None:
            cpu_change = many.cpu_us / one.cpu_us - 1
            rate_change = many.rate / one.rate - 1
            verdicts.append(
                _verdict(
                    f"at {args.apps} apps CPU {cpu_change:+.0%}, req/s {rate_change:+.0%}"
                    f" (within {SCALE_TOLERANCE:.0%})",
                    abs(cpu_change) <= SCALE_TOLERANCE and abs(rate_change) <= SCALE_TOLERANCE,
                )
            )
        print(f"  {proxy:8} " + "; ".join(verdicts))
    for note in notes:
        print(f"note: {note}")


def _verdict(text: str, ok: bool) -> str:
    return f"{text}: {'met' if ok else 'NOT met'}"


def _median(results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


@contextmanager
def _stopped(stop: list[object]) -> Iterator[None]:
    """Stop whatever was started, whatever happens (reverse order)."""
    try:
        yield
    finally:
        for item in reversed(stop):
            try:
                if isinstance(item, subprocess.Popen):
                    item.terminate()
                    item.wait(10)
                elif isinstance(item, HAProxyRouter):
                    item.stop()
            except Exception as exc:  # cleanup goes on; the error is shown
                print(f"cleanup: {exc!r}", file=sys.stderr)


def throughput(args: argparse.Namespace) -> None:
    tag = f"slipway-bench-router:{uuid.uuid4().hex[:8]}"
    container, dyno = start_dyno(tag)
    started: list[object] = []
    notes: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="sw-br-") as tmp, _stopped(started):
            folder = Path(tmp)
            paths: dict[str, tuple[str, str, list[int] | None]] = {
                "direct": (f"http://{dyno}/", last_host(1), None)
            }
            upstream = Upstream("web.1", dyno)
            for apps, suffix in ((1, ""), (args.apps, f"@{args.apps}")):
                haproxy = start_haproxy(folder / f"hx{apps}")
                started.append(haproxy)
                took = route_haproxy(haproxy, haproxy_routes(apps, upstream))
                assert haproxy.server.process is not None
                if apps > 1:
                    notes.append(f"haproxy: {apps} apps routed in {took:.1f} s (one reload)")
                paths[f"haproxy{suffix}"] = (
                    f"http://127.0.0.1:{haproxy.port}/",
                    last_host(apps),
                    with_children(haproxy.server.process.pid),
                )
                loaded = time.monotonic()
                nginx, nginx_port = start_nginx(folder / f"nginx{apps}", dyno, apps)
                started.append(nginx)
                if apps > 1:
                    notes.append(
                        f"nginx: {apps} server blocks loaded in {time.monotonic() - loaded:.1f} s"
                    )
                paths[f"nginx{suffix}"] = (
                    f"http://127.0.0.1:{nginx_port}/",
                    last_host(apps),
                    with_children(nginx.pid),
                )
            # Interleaved rounds, median per path: a load spike elsewhere on the machine
            # hits every path alike instead of skewing one of them.
            runs: dict[str, list[Result]] = {name: [] for name in paths}
            light = argparse.Namespace(**{**vars(args), "connections": 1, "threads": 1})
            for _ in range(args.rounds):
                for name, (url, host, pids) in paths.items():
                    saturated = wrk(name, url, host, args, pids)
                    one = wrk(name, url, host, light, None)
                    runs[name].append(replace(saturated, light_p50_ms=one.p50_ms))
            report([_median(found) for found in runs.values()], args, notes)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


# Route changes (--churn) -------------------------------------------------------------


async def local_dyno(name: str) -> tuple[asyncio.Server, Upstream]:
    """A small HTTP/1.1 server on loopback that answers its own name (keep-alive)."""
    body = name.encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GETs only: no request body
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Upstream(name, f"127.0.0.1:{port}")


async def ask(port: int, host: str) -> tuple[int, str]:
    """One GET through the router on a new connection: (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


async def until_answer(port: int, host: str, body: str, timeout: float = 10.0) -> float:
    """Ask until `host` answers `body`; the time it first did (TimeoutError after `timeout`)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (await ask(port, host))[1] == body:
            return time.perf_counter()
    raise TimeoutError(f"{host} never answered {body!r}")


def _route(index: int, upstream: Upstream, domain: str = "localhost") -> AppRoute:
    name = app_name(index)
    return AppRoute(name, name, (f"{name}.{domain}",), (upstream,))


async def change_latency(folder: Path, size: int, changes: int) -> tuple[list[float], int]:
    """`changes` new releases (an app's dyno replaced by another) among `size` apps: the
    seconds from the start of each reconcile pass until a client got the new dyno; and
    how many reloads those passes made."""
    router = await asyncio.to_thread(start_haproxy, folder)
    servers = []
    try:
        first, a = await local_dyno("a")
        second, b = await local_dyno("b")
        servers = [first, second]
        routes = [_route(i, a) for i in range(size)]
        reconciler = Reconciler(router.server, router.options, load_pages())
        try:
            await reconciler.reconcile(routes)
            reloads = reconciler.reloads
            latencies = []
            for change in range(changes):
                index = (change * 7919) % size  # spread over the map, same picks every run
                new = b if routes[index].upstreams[0] == a else a
                routes[index] = _route(index, new)
                started = time.perf_counter()
                seen = asyncio.create_task(
                    until_answer(router.port, routes[index].hosts[0], new.dyno)
                )
                await reconciler.reconcile(routes)
                latencies.append(await seen - started)
            return latencies, reconciler.reloads - reloads
        finally:
            await reconciler.close()
    finally:
        for server in servers:
            server.close()
        await asyncio.to_thread(router.stop)


async def create_destroy(folder: Path, apps: int, rate: float) -> tuple[float, int, int]:
    """`apps` apps created then destroyed at `rate` events/s, a wirer loop coalescing them
    into passes: (seconds from the last event until the router reflected it, passes, hosts
    of destroyed apps still answering something other than 404 afterwards)."""
    router = await asyncio.to_thread(start_haproxy, folder)
    server, dyno = await local_dyno("web")
    reconciler = Reconciler(router.server, router.options, load_pages())
    desired: dict[int, AppRoute] = {}
    dirty, finished = asyncio.Event(), asyncio.Event()
    passes: list[float] = []

    async def wirer() -> float:
        while True:
            await dirty.wait()
            dirty.clear()
            outcome = await reconciler.reconcile(list(desired.values()))
            passes.append(time.perf_counter())
            if outcome.pending:
                dirty.set()  # a server still draining: the next pass deletes it
            elif finished.is_set() and not dirty.is_set():
                return passes[-1]

    async def events() -> float:
        started = time.perf_counter()
        for event in range(2 * apps):
            await asyncio.sleep(max(0.0, started + event / rate - time.perf_counter()))
            if event < apps:
                desired[event] = _route(event, dyno, "churn.localhost")
            else:
                del desired[event - apps]
            dirty.set()
        finished.set()
        return time.perf_counter()

    try:
        loop = asyncio.create_task(wirer())
        last_event = await events()
        reflected = await asyncio.wait_for(loop, 60) - last_event
        answering = 0
        for index in range(apps):
            status, _ = await ask(router.port, f"{app_name(index)}.churn.localhost")
            answering += status != 404
        return reflected, len(passes), answering
    finally:
        await reconciler.close()
        server.close()
        await asyncio.to_thread(router.stop)


async def changes_under_load(folder: Path, seconds: int) -> tuple[int, int, int, int]:
    """wrk on one app for `seconds` while its dynos change once a second (a dyno replaced,
    added, removed; drained ones deleted once idle): (route changes, requests, non-2xx
    answers, socket errors)."""
    router = await asyncio.to_thread(start_haproxy, folder)
    started = [await local_dyno(name) for name in ("web.1", "web.2", "web.3")]
    a, b, c = (upstream for _, upstream in started)
    shapes = [[a], [b], [a, b], [c], [b, c], [a, c], [a, b, c]]
    reconciler = Reconciler(router.server, router.options, load_pages())
    host = "load.localhost"
    try:
        await reconciler.reconcile([AppRoute("load", "load", (host,), (a,))])
        wrk = await asyncio.create_subprocess_exec(
            "wrk", "-t2", "-c8", f"-d{seconds}s", "-H", f"Host: {host}",
            f"http://127.0.0.1:{router.port}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        changes = 0
        deadline = time.monotonic() + seconds - 1
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            shape = shapes[changes % len(shapes)]
            await reconciler.reconcile([AppRoute("load", "load", (host,), tuple(shape))])
            changes += 1
        out = (await asyncio.wait_for(wrk.communicate(), seconds + 30))[0].decode()
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sockets = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        socket_errors = sum(int(n) for n in sockets.groups()) if sockets else 0
        return changes, requests, int(non_2xx.group(1)) if non_2xx else 0, socket_errors
    finally:
        await reconciler.close()
        for server, _ in started:
            server.close()
        await asyncio.to_thread(router.stop)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def churn(args: argparse.Namespace) -> None:
    print(
        "HAProxy route changes through the reconciler (runtime API); dynos are loopback"
        " servers in this process; the machine is shared (2 cores)"
    )
    with tempfile.TemporaryDirectory(prefix="sw-bc-") as tmp:
        for size in args.churn_sizes:
            latencies, reloads = await change_latency(Path(tmp) / f"c{size}", size, args.changes)
            ms = [1000 * x for x in latencies]
            p50, p99 = statistics.median(ms), _percentile(ms, 0.99)
            print(
                f"{size:6d} apps: route change visible to a client p50 {p50:6.1f} ms,"
                f" p99 {p99:6.1f} ms ({len(ms)} changes, {reloads} reloads);"
                f" target <= 100 ms: {'met' if p99 <= 100 else 'NOT met'}"
            )
        reflected, passes, answering = await create_destroy(
            Path(tmp) / "cd", args.churn_apps, args.churn_rate
        )
        print(
            f"{args.churn_apps} apps created then destroyed at {args.churn_rate:.0f}/s"
            f" ({passes} reconcile passes): fully reflected {reflected:.3f} s after the last"
            f" event; destroyed apps still answering: {answering};"
            f" target <= 2 s and none: {'met' if reflected <= 2 and not answering else 'NOT met'}"
        )
        if args.load_seconds > 0:
            changes, requests, non_2xx, errors = await changes_under_load(
                Path(tmp) / "ld", args.load_seconds
            )
            print(
                f"{changes} route changes in {args.load_seconds} s under wrk load"
                f" ({requests} requests): non-2xx {non_2xx}, socket errors {errors};"
                f" target none failed: {'met' if non_2xx == errors == 0 else 'NOT met'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every path once")
    parser.add_argument("--apps", type=int, default=10_000, help="the many-apps figure")
    parser.add_argument("--churn", action="store_true", help="route changes instead of load")
    parser.add_argument("--changes", type=int, default=30, help="route changes per size")
    parser.add_argument(
        "--churn-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100, 1000, 10_000],
    )
    parser.add_argument("--churn-apps", type=int, default=1000)
    parser.add_argument("--churn-rate", type=float, default=20.0, help="events per second")
    parser.add_argument(
        "--load-seconds",
        type=int,
        default=60,
        help="route changes once a second under wrk load for this long (0: skip)",
    )
    args = parser.parse_args()
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        sys.exit("haproxy not found: scripts/up installs it (apt-get install -y haproxy)")
    if args.churn:
        asyncio.run(churn(args))
        return
    # Before any container starts: scripts/up installs both (scripts/install.sh).
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} not found: scripts/up installs it (apt-get install -y {tool})")
    throughput(args)


if __name__ == "__main__":
    main()
