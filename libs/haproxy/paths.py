"""Where one HAProxy listens and keeps its files; private folders for its unix sockets."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from slipway.libs.haproxy.errors import UnsafeSocketFolder

# The kernel's limit on a unix socket's path (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107


def _own_directory(folder: Path) -> os.stat_result:
    """`folder`'s status if it is a directory (not a link) this user owns; else refused."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeSocketFolder(f"{folder} is not a directory: remove it, or choose another path")
    if info.st_uid != os.geteuid():
        raise UnsafeSocketFolder(
            f"{folder} belongs to uid {info.st_uid}, not to the router's controller"
            f" (uid {os.geteuid()}): remove it, or choose another path"
        )
    return info


def private_folder(folder: Path) -> None:
    """Make `folder` (0700) for a socket only this user may open, or refuse an unsafe one.

    A folder someone else owns, or a link, could let them swap the socket for their own;
    one that others may enter would expose it. Those are refused, not repaired: chmod-ing
    a folder an operator named (/run, /tmp) would break what else lives there.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = _own_directory(folder)
    if info.st_mode & 0o077:
        raise UnsafeSocketFolder(
            f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}): a socket"
            f" there must be its owner's alone; chmod 700 {folder}, or choose another path"
        )


def controlled_folder(folder: Path) -> None:
    """Refuse a data folder someone else could write: whoever can replace `haproxy.cfg`
    there has it loaded by the next reload, as the router's user. Others may read and
    enter it (the sockets have their own 0700 folder); owner and write bits are checked."""
    info = _own_directory(folder)
    if info.st_mode & 0o022:
        raise UnsafeSocketFolder(
            f"{folder} may be written by other users (mode {stat.S_IMODE(info.st_mode):o}):"
            f" its configuration would be theirs to replace; chmod go-w {folder}, or choose"
            " another path"
        )


def check_socket_path(path: Path) -> Path:
    """`path`, absolute, or UnsafeSocketFolder when the kernel could not bind it."""
    path = path.resolve()
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise UnsafeSocketFolder(
            f"the socket path {path} is longer than {MAX_SOCKET_PATH} bytes, the kernel's"
            " limit: choose a shorter data folder"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RouterPorts:
    """Where HAProxy listens for customers' traffic (0: pick a free port at first start)."""

    http_port: int = 8080
    https_port: int = 8443
    listen_host: str = ""  # "" = every interface; the router is the internet-facing door


@dataclass(frozen=True)
class RouterPaths:
    """The files one HAProxy instance uses, all under its data folder."""

    data_dir: Path

    @property
    def sockets(self) -> Path:
        """The 0700 folder of the runtime, master and log sockets."""
        return self.data_dir / "run"

    @property
    def runtime_socket(self) -> Path:
        return self.sockets / "admin.sock"

    @property
    def master_socket(self) -> Path:
        return self.sockets / "master.sock"

    @property
    def log_socket(self) -> Path:
        return self.sockets / "log.sock"

    @property
    def config(self) -> Path:
        return self.data_dir / "haproxy.cfg"

    @property
    def output(self) -> Path:
        """HAProxy's own notices and alerts (never access lines)."""
        return self.data_dir / "haproxy.log"
