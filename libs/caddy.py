"""Run the router, a real Caddy (Debian package `caddy`), for scripts and tests.

Caddy starts from a small boot configuration: the admin API on a loopback
address, storage (the internal CA, certificates) under `data_dir`, the plain
HTTP server with automatic HTTPS off, the HTTPS server with redirects off, and
`install_trust: false` so Caddy never touches the machine's trust store; and it
sets `net.ipv4.tcp_migrate_req=1`, so that a configuration load resets no
connection (`migrate_queued_connections`). From then on network-wirer is the only
writer of its configuration, through the admin API; Caddy never persists it
(`admin.config.persist: false`), so a restarted Caddy comes back with the boot
configuration and the wirer's next reconcile loads the routes again.

    python -m slipway.libs.caddy --data var/caddy   # ports from SLIPWAY_ROUTER_* (8080, 8443, 2019)

Port 0 picks a free port (tests); a restart keeps the ports chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipway.libs.foreground import serve_until_signalled, stop_child

HTTP_SERVER = "router_http"
# Go collects garbage each time the heap doubles (GOGC=100). A proxy's heap is small and
# churns on every request, so collection is a fifth of Caddy's CPU under load; letting the
# heap grow 4x between collections (tens of MB here) buys about 15 % more requests per core.
DEFAULT_GOGC = 400
HTTPS_SERVER = "router_https"


@dataclass(frozen=True)
class RouterAddress:
    """Where Caddy listens: the public ports and the loopback admin API."""

    http_port: int = 8080
    https_port: int = 8443
    admin_port: int = 2019
    listen_host: str = ""  # "" = every interface; the router is the internet-facing door
    admin_host: str = "127.0.0.1"

    @property
    def admin_listen(self) -> str:
        return f"{self.admin_host}:{self.admin_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_listen}"

    def listen(self, port: int) -> str:
        return f"{self.listen_host}:{port}"


MIGRATE_SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def migrate_queued_connections(sysctl: Path = MIGRATE_SYSCTL) -> bool:
    """Have Linux hand a closing listener's queued connections to its successor.

    Caddy 2.6 binds a new SO_REUSEPORT socket on every configuration load and closes the
    old one; the kernel spreads new connections over both meanwhile, and by default
    resets those still queued on the old one when it closes: clients saw "connection
    reset" during deploys. `net.ipv4.tcp_migrate_req=1` (Linux 5.14+, per network
    namespace) moves them to the new socket instead. Whether it is on (needs root).
    """
    try:
        if sysctl.read_text().strip() != "1":
            sysctl.write_text("1\n")
        return sysctl.read_text().strip() == "1"
    except OSError:
        return False


def caddy_binary() -> str:
    """The caddy executable (Debian installs /usr/bin/caddy)."""
    found = shutil.which("caddy")
    if found is None:
        raise FileNotFoundError("caddy not found: apt-get install -y caddy")
    return found


def boot_config(address: RouterAddress, storage_dir: Path | str) -> dict[str, Any]:
    """The configuration Caddy starts with: no app routes, a 503 for every request.

    network-wirer builds its full configuration on top of this same skeleton, so
    the admin address, storage and trust settings never change after boot.
    """
    # Until network-wirer loads the routes, every request gets a 503 that says so.
    starting = [
        {
            "handle": [
                {
                    "handler": "static_response",
                    "status_code": 503,
                    "headers": {"Retry-After": ["5"]},
                    "body": "The router is starting; try again in a few seconds.\n",
                }
            ]
        }
    ]
    return {
        "admin": {"listen": address.admin_listen, "config": {"persist": False}},
        "storage": {"module": "file_system", "root": str(storage_dir)},
        "apps": {
            "http": {
                "http_port": address.http_port,
                "https_port": address.https_port,
                "servers": {
                    HTTP_SERVER: {
                        "listen": [address.listen(address.http_port)],
                        "automatic_https": {"disable": True},
                        "routes": starting,
                    },
                    HTTPS_SERVER: {
                        "listen": [address.listen(address.https_port)],
                        "automatic_https": {"disable_redirects": True},
                        "tls_connection_policies": [{}],
                        "routes": starting,
                    },
                },
            },
            "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
        },
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class CaddyServer:
    """One `caddy run` process with its boot configuration and storage in `data_dir`."""

    def __init__(
        self,
        data_dir: Path | str,
        address: RouterAddress | None = None,
        *,
        own_session: bool = True,
        gomaxprocs: int | None = None,
        gogc: int | None = DEFAULT_GOGC,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        # Under a supervisor Caddy stays in our process group, so killing the group
        # (what the supervisor does to a child it gives up on) never orphans it.
        self.own_session = own_session
        # Go spreads a proxy's work over every core and spins looking for more; on a small
        # machine shared with dynos, one P spends about half the CPU per request.
        self.gomaxprocs = gomaxprocs
        self.gogc = gogc
        address = address or RouterAddress()
        # Ports are fixed at the first start so that a restart answers on the same ones.
        bind_host = address.listen_host or "0.0.0.0"  # noqa: S104 - the router is public
        self.address = RouterAddress(
            http_port=address.http_port or free_port(bind_host),
            https_port=address.https_port or free_port(bind_host),
            admin_port=address.admin_port or free_port(address.admin_host),
            listen_host=address.listen_host,
            admin_host=address.admin_host,
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def root_certificate(self) -> Path:
        """The internal CA's root: what clients trust to reach custom domains over HTTPS."""
        return self.storage_dir / "pki" / "authorities" / "local" / "root.crt"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "caddy.log"

    @property
    def admin_url(self) -> str:
        return self.address.admin_url

    def start(self, timeout: float = 15.0) -> str:
        """Start Caddy and wait until its admin API answers; returns the admin URL."""
        if self.process is not None and self.process.poll() is None:
            return self.admin_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not migrate_queued_connections():
            print(
                "caddy: net.ipv4.tcp_migrate_req is off and cannot be set (needs root and"
                " Linux 5.14+): configuration loads may reset connections being accepted",
                file=sys.stderr,
            )
        config_path = self.data_dir / "boot.json"
        config_path.write_text(json.dumps(boot_config(self.address, self.storage_dir), indent=2))
        env = dict(os.environ)
        # Caddy's own data/config folders (autosave, locks) stay inside data_dir too.
        env["XDG_DATA_HOME"] = str(self.data_dir / "xdg-data")
        env["XDG_CONFIG_HOME"] = str(self.data_dir / "xdg-config")
        env["HOME"] = str(self.data_dir)
        if self.gomaxprocs:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        if self.gogc:
            env["GOGC"] = str(self.gogc)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [caddy_binary(), "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=self.own_session,
        )
        log.close()
        self._wait_ready(timeout)
        return self.admin_url

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"caddy exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.admin_url}/config/", timeout=0.5):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"caddy admin API not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.process is not None:
            stop_child(self.process, timeout)
        self.process = None

    def restart(self) -> str:
        """Stop and start again with the same ports and storage (the boot configuration)."""
        self.stop()
        return self.start()


def address_from_env(environ: dict[str, str] | None = None) -> RouterAddress:
    """The router's ports from SLIPWAY_ROUTER_* variables, the same ones network-wirer reads."""
    env = os.environ if environ is None else environ
    return RouterAddress(
        http_port=int(env.get("SLIPWAY_ROUTER_HTTP_PORT", "8080")),
        https_port=int(env.get("SLIPWAY_ROUTER_HTTPS_PORT", "8443")),
        admin_port=int(env.get("SLIPWAY_ROUTER_ADMIN_PORT", "2019")),
        listen_host=env.get("SLIPWAY_ROUTER_LISTEN_HOST", ""),
    )


def main(argv: list[str] | None = None) -> int:
    """Run Caddy until SIGTERM/SIGINT, with the boot configuration above."""
    parser = argparse.ArgumentParser(description="Run Caddy, Slipway's router.")
    home = os.environ.get("SLIPWAY_HOME", "var")
    parser.add_argument("--data", default=os.environ.get("SLIPWAY_CADDY_DATA", f"{home}/caddy"))
    args = parser.parse_args(argv)
    procs = int(os.environ.get("SLIPWAY_ROUTER_GOMAXPROCS", "0")) or None
    gogc = int(os.environ.get("SLIPWAY_ROUTER_GOGC", str(DEFAULT_GOGC))) or None
    server = CaddyServer(
        args.data, address_from_env(), own_session=False, gomaxprocs=procs, gogc=gogc
    )
    server.start()
    print(f"caddy ready: admin {server.admin_url}, storage {server.storage_dir}", flush=True)
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
