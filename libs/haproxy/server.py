"""Start, reload and stop one HAProxy master-worker; `python -m slipway.libs.haproxy`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from slipway.libs.foreground import serve_until_signalled, stop_child
from slipway.libs.haproxy.errors import HAProxyError
from slipway.libs.haproxy.paths import (
    RouterPaths,
    RouterPorts,
    check_socket_path,
    controlled_folder,
    free_port,
    private_folder,
)
from slipway.libs.haproxy.runtime import Runtime, master_command


def haproxy_binary() -> str:
    """The haproxy executable (Debian installs /usr/sbin/haproxy)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError("haproxy not found: apt-get install -y haproxy")
    return found


def _reloads(show_proc: str) -> int:
    """The master's reload count from `show proc` (-1 when unreadable)."""
    for line in show_proc.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == "master":
            with contextlib.suppress(ValueError):
                return int(parts[2])
    return -1


class HAProxyServer:
    """One HAProxy master (and its worker) running the configuration in `data_dir`.

    The caller writes the configuration (network-wirer renders it from the routes);
    `start` checks it (`haproxy -c`) and starts the master, `reload` checks the file
    again and asks the master for a seamless reload.
    """

    def __init__(
        self,
        data_dir: Path | str,
        ports: RouterPorts | None = None,
        *,
        own_session: bool = True,
    ) -> None:
        self.paths = RouterPaths(Path(data_dir).resolve())
        for path in (self.paths.runtime_socket, self.paths.master_socket, self.paths.log_socket):
            check_socket_path(path)
        # Under a supervisor HAProxy stays in our process group, so killing the group
        # (what the supervisor does to a child it gives up on) never orphans it.
        self.own_session = own_session
        ports = ports or RouterPorts()
        bind_host = ports.listen_host or "0.0.0.0"  # noqa: S104 - the router is public
        # Ports are fixed at the first start so that a restart answers on the same ones.
        self.ports = replace(
            ports,
            http_port=ports.http_port or free_port(bind_host),
            https_port=ports.https_port or free_port(bind_host),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def runtime(self) -> Runtime:
        """A new runtime API client of this HAProxy (close it when done)."""
        return Runtime(self.paths.runtime_socket)

    def check(self, config: Path | None = None) -> None:
        """`haproxy -c`: HAProxyError with HAProxy's own words when the file is invalid."""
        result = subprocess.run(
            [haproxy_binary(), "-c", "-q", "-f", str(config or self.paths.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise HAProxyError(f"invalid haproxy configuration: {result.stderr.strip()[:2000]}")

    def start(self, timeout: float = 15.0) -> None:
        """Start HAProxy on the written configuration; return once its runtime API answers
        and its master CLI accepts."""
        if self.process is not None and self.process.poll() is None:
            return
        controlled_folder(self.paths.data_dir)
        private_folder(self.paths.sockets)
        self.check()
        for path in (self.paths.runtime_socket, self.paths.master_socket):
            path.unlink(missing_ok=True)  # left by a killed HAProxy; nobody answers them
        output = self.paths.output.open("ab")
        self.process = subprocess.Popen(
            [
                haproxy_binary(),
                "-W",  # master-worker: reloads keep the master, its PID and sockets
                "-S",
                f"{self.paths.master_socket},mode,600",
                "-f",
                str(self.paths.config),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
            # Everything HAProxy creates is its owner's alone (sockets are also mode 600).
            umask=0o077,
        )
        output.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HAProxyError(
                    f"haproxy exited with {self.process.returncode}; see {self.paths.output}"
                )
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(1.0)
                    sock.connect(str(self.paths.runtime_socket))
                    sock.sendall(b"show info\n")
                    answered = bool(sock.recv(64))
                if answered:
                    # The master accepts on its CLI a few ms after the worker answers (it
                    # refuses until then); reload() needs it, so ready means both.
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.settimeout(1.0)
                        sock.connect(str(self.paths.master_socket))
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"haproxy not ready after {timeout}s; see {self.paths.output}")

    async def reload(self, timeout: float = 30.0) -> None:
        """Seamlessly reload the written configuration (checked first); wait for the new worker.

        The new worker takes the listening sockets over from the old one, which finishes
        its requests and exits (`hard-stop-after` bounds how long websockets keep it).
        """
        await asyncio.to_thread(self.check)
        before = _reloads(await master_command(self.paths.master_socket, "show proc"))
        await master_command(self.paths.master_socket, "reload", timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):
                procs = await master_command(self.paths.master_socket, "show proc")
                if _reloads(procs) > before:
                    if "[failed: 0]" not in procs.splitlines()[1]:
                        raise HAProxyError(f"haproxy reload failed; see {self.paths.output}")
                    if await self._runtime_answers():
                        return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"haproxy reload not done after {timeout}s; see {self.paths.output}")

    async def _runtime_answers(self) -> bool:
        runtime = self.runtime()
        try:
            return bool(await runtime.command("show info"))
        except HAProxyError:
            return False
        finally:
            await runtime.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM to the master stops its workers), then SIGKILL."""
        if self.process is not None:
            stop_child(self.process, timeout)
        self.process = None


def starting_config(paths: RouterPaths, ports: RouterPorts) -> str:
    """What HAProxy runs until network-wirer writes its own configuration and reloads:
    the same sockets, every HTTP request answered 503, HTTPS connections closed (there
    is no certificate yet). The listeners are the wirer's, taken over on its reload."""
    host = ports.listen_host
    return "\n".join(
        [
            "# Written by libs/haproxy.py: network-wirer replaces it, then reloads.",
            "global",
            "    master-worker",
            f"    stats socket {paths.runtime_socket} mode 600 level admin expose-fd listeners",
            f"    log unix@{paths.log_socket} len 8192 format raw local0 info",
            "defaults",
            "    timeout client 10s",
            "    timeout connect 5s",
            "    timeout server 10s",
            "frontend starting_http",
            "    mode http",
            f"    bind {host}:{ports.http_port}",
            "    http-request return status 503 content-type text/plain hdr Retry-After 5 string"
            ' "The router is starting; try again in a few seconds."',
            "frontend starting_https",
            "    mode tcp",
            f"    bind {host}:{ports.https_port}",
            "    tcp-request connection reject",
            "",
        ]
    )


def ports_from_env(environ: dict[str, str] | None = None) -> RouterPorts:
    """The router's ports from SLIPWAY_ROUTER_* variables, the same ones network-wirer reads."""
    env = os.environ if environ is None else environ
    return RouterPorts(
        http_port=int(env.get("SLIPWAY_ROUTER_HTTP_PORT", "8080")),
        https_port=int(env.get("SLIPWAY_ROUTER_HTTPS_PORT", "8443")),
        listen_host=env.get("SLIPWAY_ROUTER_LISTEN_HOST", ""),
    )


def main(argv: list[str] | None = None) -> int:
    """Run HAProxy until SIGTERM/SIGINT, on the configuration network-wirer wrote (or,
    before it ever did, on `starting_config`)."""
    parser = argparse.ArgumentParser(description="Run HAProxy, Slipway's router.")
    home = os.environ.get("SLIPWAY_HOME", "var")
    parser.add_argument("--data", default=os.environ.get("SLIPWAY_HAPROXY_DATA", f"{home}/haproxy"))
    args = parser.parse_args(argv)
    try:
        server = HAProxyServer(args.data, ports_from_env(), own_session=False)
        if not server.paths.config.exists():
            server.paths.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            server.paths.config.write_text(starting_config(server.paths, server.ports))
        server.start()
    except (HAProxyError, TimeoutError) as exc:
        # One readable line for the operator (the supervisor's log), not a traceback.
        print(f"haproxy: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"haproxy ready: runtime {server.paths.runtime_socket}", flush=True)
    return serve_until_signalled(server)
