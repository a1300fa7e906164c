"""The router's cost: a hello dyno hit directly, through Caddy and through nginx, same run.

    .venv/bin/python bench/router.py [--duration 5] [--connections 16] [--threads 2]

One container FROM slipway/stack-run:bookworm runs a Node.js hello server on $PORT
(5000) on Docker's bridge. Every path reaches it at its container address, as the router
does for dynos on its own host (routes.dial_of); a published port on 127.0.0.1 would put
Docker's userland proxy (about 30 us of CPU per request) on every path. With wrk (Debian)
for `--duration` seconds each:

- direct:     wrk → the dyno's address and $PORT;
- caddy:      wrk → Caddy loaded with network-wirer's own configuration (routes.py:
              host match, X-Request-Id, X-Forwarded-*, round robin, health checks);
- caddy/gc100: the same Caddy with Go's default GOGC=100 instead of the router's 400
              (libs/caddy.DEFAULT_GOGC), to show what that setting buys;
- caddy+log:  the first with the access log streamed to a loopback listener, as in
              production (network-wirer reads it);
- nginx:      wrk → nginx (Dokku's choice) set up the same way: host match, upstream
              keepalive, X-Request-Id / X-Forwarded-*, retry on connection error.

Prints requests/s, p50 and p99 for each, the ratios against direct, and the CPU time
the proxy process spent per request (a figure other load on the machine barely moves). Target
(issue 6): the Caddy path ≥ 0.8x direct throughput with ≤ 1 ms added p50. All three
share the machine's cores with wrk and the dyno, as they would in one box.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import Dyno
from slipway.libs.caddy import DEFAULT_GOGC, CaddyServer, RouterAddress, free_port
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routes import RouterOptions, app_routes, caddy_config

RUN_STACK = "slipway/stack-run:bookworm"
HOST = "bench.localhost"
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
  upstream dynos {{ server {dyno} max_fails=1 fail_timeout=10s; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} default_server;
    return 404;
  }}
  server {{
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
}}
"""


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # the proxy's CPU time per request: independent of other load


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (nginx's workers)."""
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


def wrk(name: str, url: str, args: argparse.Namespace, pids: list[int] | None = None) -> Result:
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
            f"Host: {HOST}",
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


def load_caddy(caddy: CaddyServer, dyno_address: str, access_log: str | None) -> None:
    """Load network-wirer's configuration for one app with one dyno into Caddy."""
    app = AppDesired(app_id="bench", app_name="bench", team_id="t")
    dyno = Dyno(
        app_id="bench",
        app_name="bench",
        team_id="t",
        name="web.1",
        process_type="web",
        release_version=1,
        state="up",
        host_id="local",
        private_address=dyno_address.rsplit(":", 1)[0],
        private_port=int(dyno_address.rsplit(":", 1)[1]),
    )
    options = RouterOptions(
        address=caddy.address, storage_dir=str(caddy.storage_dir), access_log=access_log
    )
    routes = app_routes([app], [dyno], "localhost", options.router_host)
    assert routes[0].upstreams, "the dyno must be routed"
    config = caddy_config(routes, options, load_pages())
    caddy.admin("POST", "/load", config)
    wait_http(f"http://127.0.0.1:{caddy.address.http_port}/", HOST)


def log_sink() -> str:
    """A loopback listener that reads and drops Caddy's access log, as network-wirer would."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=lambda c=conn: _drain(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return f"tcp/127.0.0.1:{server.getsockname()[1]}"  # a Caddy network address


def _drain(conn: socket.socket) -> None:
    with conn:
        while conn.recv(65536):
            pass


def start_nginx(workdir: Path, dyno: str) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx not found: apt-get install -y nginx-light (and keep its service stopped)")
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=workdir, dyno=dyno, port=port, host=HOST))
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(workdir)], stderr=subprocess.DEVNULL
    )
    wait_http(f"http://127.0.0.1:{port}/", HOST)
    return process, port


def report(results: list[Result], args: argparse.Namespace) -> None:
    direct = results[0]
    print(
        f"wrk {args.duration}s x {args.rounds} interleaved rounds (median per path), "
        f"{args.connections} connections, {args.threads} threads, loopback"
    )
    columns = ("req/s", "p50 ms", "p99 ms", "errors", "x direct", "+p50 ms", "CPU us/req")
    print(f"{'path':11} " + " ".join(f"{c:>9}" for c in columns))
    for r in results:
        ratio = r.rate / direct.rate
        print(
            f"{r.name:11} {r.rate:9.0f} {r.p50_ms:9.3f} {r.p99_ms:9.3f} {r.errors:9d} "
            f"{ratio:9.2f} {r.p50_ms - direct.p50_ms:9.3f} "
            + (f"{r.cpu_us:10.1f}" if r.cpu_us else f"{'-':>10}")
        )
    caddy = next(r for r in results if r.name == "caddy")
    ok = caddy.rate >= 0.8 * direct.rate and caddy.p50_ms - direct.p50_ms <= 1.0
    print(f"target (caddy >= 0.8x direct, <= 1 ms added p50): {'met' if ok else 'NOT met'}")


def _median(results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every path once")
    args = parser.parse_args()
    tag = f"slipway-bench-router:{uuid.uuid4().hex[:8]}"
    container, dyno = start_dyno(tag)
    nginx: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="slipway-bench-router-") as tmp:
        plain = _caddy(Path(tmp) / "caddy")
        gc100 = _caddy(Path(tmp) / "caddy-gc100", gogc=100)
        logged = _caddy(Path(tmp) / "caddy-log")
        try:
            load_caddy(plain, dyno, None)
            load_caddy(gc100, dyno, None)
            load_caddy(logged, dyno, log_sink())
            nginx, nginx_port = start_nginx(Path(tmp) / "nginx", dyno)
            assert plain.process is not None
            assert gc100.process is not None
            assert logged.process is not None
            paths: dict[str, tuple[str, list[int] | None]] = {
                "direct": (f"http://{dyno}/", None),
                "caddy": (f"http://127.0.0.1:{plain.address.http_port}/", [plain.process.pid]),
                "caddy/gc100": (
                    f"http://127.0.0.1:{gc100.address.http_port}/",
                    [gc100.process.pid],
                ),
                "caddy+log": (
                    f"http://127.0.0.1:{logged.address.http_port}/",
                    [logged.process.pid],
                ),
                "nginx": (f"http://127.0.0.1:{nginx_port}/", with_children(nginx.pid)),
            }
            # Interleaved rounds, median per path: a load spike elsewhere on the machine
            # hits every path alike instead of skewing one of them.
            runs: dict[str, list[Result]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, (url, pids) in paths.items():
                    runs[name].append(wrk(name, url, args, pids))
            report([_median(found) for found in runs.values()], args)
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
            for server in (plain, gc100, logged):
                server.stop()
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def _caddy(folder: Path, gogc: int = DEFAULT_GOGC) -> CaddyServer:
    server = CaddyServer(
        folder,
        RouterAddress(http_port=0, https_port=0, listen_host="127.0.0.1"),
        gogc=gogc,
    )
    server.start()
    return server


if __name__ == "__main__":
    main()
