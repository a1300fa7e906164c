"""Who listens where, read from /proc: the sockets a process tree holds, as an attacker on
this machine would find them with `ss -ltnup`, without depending on iproute2."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"  # /proc/net/tcp's `st` column


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket (or a UDP socket bound to a port): address, port, holder."""

    host: str
    port: int
    pid: int


def _hex_address(field: str) -> tuple[str, int]:
    """An address of /proc/net/{tcp,udp}{,6}: hex IP (host order per 32-bit word), port."""
    raw, port = field.split(":")
    packed = bytes.fromhex(raw)
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    words = [packed[i : i + 4][::-1] for i in range(0, len(packed), 4)]
    return str(ipaddress.ip_address(b"".join(words))), int(port, 16)


def _bound_inodes(protocol: str) -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port): TCP sockets in LISTEN, UDP sockets bound to a port."""
    found: dict[int, tuple[str, int]] = {}
    for table in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            host, port = _hex_address(fields[1])
            # A UDP socket has no LISTEN state: any local port means datagrams reach it.
            if (fields[3] == TCP_LISTEN) if protocol == "tcp" else port != 0:
                found[int(fields[9])] = (host, port)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes  # exited meanwhile
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _listeners(pids: set[int], protocol: str) -> list[Listener]:
    bound = _bound_inodes(protocol)
    return [
        Listener(*bound[inode], pid)
        for pid in sorted(pids)
        for inode in _socket_inodes(pid)
        if inode in bound
    ]


def tcp_listeners(pids: set[int]) -> list[Listener]:
    """Every TCP socket the processes `pids` listen on."""
    return _listeners(pids, "tcp")


def udp_listeners(pids: set[int]) -> list[Listener]:
    """Every UDP socket of the processes `pids` that is bound to a port (syslog-style)."""
    return _listeners(pids, "udp")


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def program(pid: int) -> str:
    """A process's name: its module for `python -m`, else its executable's name."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [word.decode() for word in argv if word]
    if not words:
        return ""  # a zombie, or a kernel thread
    if "-m" in words:
        return words[words.index("-m") + 1]
    return Path(words[0]).name


def reachable_on_loopback(listener: Listener) -> str | None:
    """The loopback address that reaches `listener`, or None if it is bound elsewhere."""
    address = ipaddress.ip_address(listener.host)
    if address.is_loopback:
        return listener.host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return None
