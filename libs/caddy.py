"""Run the router, a real Caddy (Debian package `caddy`), for scripts and tests.

Caddy starts from a small boot configuration: the admin API on a unix socket
(`<data_dir>/admin/admin.sock`, 0600, in a 0700 folder owned by this process, and
no TCP admin listener at all), storage (the internal CA, certificates) under
`data_dir`, the plain
HTTP server with automatic HTTPS off, the HTTPS server with redirects off, and
`install_trust: false` so Caddy never touches the machine's trust store; and it
sets `net.ipv4.tcp_migrate_req=1`, so that a configuration load resets no
connection (`migrate_queued_connections`). From then on network-wirer is the only
writer of its configuration, through the admin API; Caddy never persists it
(`admin.config.persist: false`), so a restarted Caddy comes back with the boot
configuration and the wirer's next reconcile loads the routes again.

    python -m slipway.libs.caddy --data var/caddy   # ports from SLIPWAY_ROUTER_* (8080, 8443)

Port 0 picks a free port (tests); a restart keeps the ports chosen.

Why a socket: the admin API has no authentication, and anything that can open a
TCP connection to loopback (any local user, a customer-named URL fetched on the
platform's side) could rewrite the routes or `POST /stop` the router. A unix
socket answers only to who may open the file: Caddy 2.6 creates it with the
process umask and has no setting for its mode, so the folder's 0700 is what keeps
others out; Caddy runs with umask 077 and the socket is chmod 0600 once it appears.
Over a unix socket Caddy 2.6 accepts only an empty Host header (`admin_request`
sends one); the Origin check is off, as browsers cannot reach a unix socket.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slipway.libs.foreground import serve_until_signalled, stop_child

HTTP_SERVER = "router_http"
# Go collects garbage each time the heap doubles (GOGC=100). A proxy's heap is small and
# churns on every request, so collection is a fifth of Caddy's CPU under load; letting the
# heap grow 4x between collections (tens of MB here) buys about 15 % more requests per core.
DEFAULT_GOGC = 400
HTTPS_SERVER = "router_https"
# The kernel's limit on a unix socket's path (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


class RouterAdminError(Exception):
    """The admin socket's folder or path cannot be made safe; the message says what to fix."""


@dataclass(frozen=True)
class RouterAddress:
    """Where Caddy listens: the public ports, and the unix socket of its admin API."""

    http_port: int = 8080
    https_port: int = 8443
    admin_socket: str = ""  # absolute path; "" until CaddyServer or the settings choose one
    listen_host: str = ""  # "" = every interface; the router is the internet-facing door

    @property
    def admin_listen(self) -> str:
        """Caddy's network address of the admin socket ("unix/" + absolute path)."""
        if not self.admin_socket:
            raise RouterAdminError("the router's admin socket path is not set")
        return f"unix/{self.admin_socket}"

    def listen(self, port: int) -> str:
        return f"{self.listen_host}:{port}"


def admin_socket_path(data_dir: Path | str) -> Path:
    """The default admin socket of the router whose state is in `data_dir`."""
    return Path(data_dir).resolve() / "admin" / "admin.sock"


def private_folder(folder: Path) -> None:
    """Make `folder` (0700) for a socket only this user may open, or refuse an unsafe one.

    A folder someone else owns, or a link, could let them swap the socket for their own or
    reach it; one that others may enter would expose it. Those are refused, not repaired:
    chmod-ing a folder an operator named (/run, /tmp) would break what else lives there.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise RouterAdminError(f"{folder} is not a directory: remove it, or choose another path")
    if info.st_uid != os.geteuid():
        raise RouterAdminError(
            f"{folder} belongs to uid {info.st_uid}, not to the router's controller"
            f" (uid {os.geteuid()}): remove it, or choose another path"
        )
    if info.st_mode & 0o077:
        raise RouterAdminError(
            f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}): a socket"
            f" there must be its owner's alone; chmod 700 {folder}, or choose another path"
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (the standard library only dials TCP)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_request(
    admin_socket: Path | str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> Any:
    """One call to Caddy's admin API over its socket; the JSON answer (None if empty).

    Raises OSError when nothing answers and RouterAdminError when Caddy answers an error.
    """
    conn = _UnixHTTPConnection(str(admin_socket), timeout)
    try:
        # Caddy 2.6 accepts only an empty Host on a unix socket (there is no host to name).
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "")
        data = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        answer = conn.getresponse()
        text = answer.read().decode()
    finally:
        conn.close()
    if answer.status >= 400:
        raise RouterAdminError(f"caddy {method} {path}: {answer.status} {text[:500]}")
    return json.loads(text) if text.strip() else None


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
        "admin": {
            "listen": address.admin_listen,
            # Origin checks guard against browsers, which cannot open a unix socket.
            "enforce_origin": False,
            "config": {"persist": False},
        },
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
        admin_socket = Path(address.admin_socket or admin_socket_path(self.data_dir)).resolve()
        if len(str(admin_socket).encode()) > MAX_SOCKET_PATH:
            raise RouterAdminError(
                f"the admin socket path {admin_socket} is longer than {MAX_SOCKET_PATH} bytes,"
                " the kernel's limit: set SLIPWAY_ROUTER_ADMIN_SOCKET to a shorter path"
            )
        self.address = replace(
            address,
            http_port=address.http_port or free_port(bind_host),
            https_port=address.https_port or free_port(bind_host),
            admin_socket=str(admin_socket),
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
    def admin_socket(self) -> Path:
        return Path(self.address.admin_socket)

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One call to this Caddy's admin API (see `admin_request`)."""
        return admin_request(self.admin_socket, method, path, body, timeout)

    def start(self, timeout: float = 15.0) -> Path:
        """Start Caddy and wait until its admin API answers; returns the admin socket."""
        if self.process is not None and self.process.poll() is None:
            return self.admin_socket
        self.data_dir.mkdir(parents=True, exist_ok=True)
        private_folder(self.admin_socket.parent)
        # A socket left by a killed Caddy would be answered by nobody; Caddy binds afresh.
        self.admin_socket.unlink(missing_ok=True)
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
            # Everything Caddy creates, the admin socket first, is its owner's alone.
            umask=0o077,
        )
        log.close()
        self._wait_ready(timeout)
        return self.admin_socket

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"caddy exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                # Before the first answer: no one but us has used the socket yet.
                self.admin_socket.chmod(0o600)
                self.admin("GET", "/config/", timeout=0.5)
                return
            except OSError:
                time.sleep(0.05)
            except RouterAdminError:
                self.stop()  # it answers, but refuses us: no use leaving it running
                raise
        self.stop()
        raise TimeoutError(f"caddy admin API not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.process is not None:
            stop_child(self.process, timeout)
        self.process = None

    def restart(self) -> Path:
        """Stop and start again with the same ports and storage (the boot configuration)."""
        self.stop()
        return self.start()


def address_from_env(data_dir: Path | str, environ: dict[str, str] | None = None) -> RouterAddress:
    """The router's address from SLIPWAY_ROUTER_* variables, the same ones network-wirer reads."""
    env = os.environ if environ is None else environ
    socket_path = env.get("SLIPWAY_ROUTER_ADMIN_SOCKET") or admin_socket_path(data_dir)
    return RouterAddress(
        http_port=int(env.get("SLIPWAY_ROUTER_HTTP_PORT", "8080")),
        https_port=int(env.get("SLIPWAY_ROUTER_HTTPS_PORT", "8443")),
        admin_socket=str(Path(socket_path).resolve()),
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
        args.data, address_from_env(args.data), own_session=False, gomaxprocs=procs, gogc=gogc
    )
    server.start()
    print(f"caddy ready: admin {server.admin_socket}, storage {server.storage_dir}", flush=True)
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
