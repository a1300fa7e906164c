"""A stand-in for the dyno init's output relay, in Python, for tests and the bench.

    python3 /.slipway/lib/dynosender.py [--buffer BYTES] [--socket PATH] -- COMMAND...

Runs inside a run-stack container (python3, stdlib only; contracts/dynoinit.py is
mounted beside it). It does what protocol.md asks of the init's relay: runs the
command with stdout and stderr on pipes, cuts them into lines (16 KiB records at
most), keeps them in a bounded ring, writes them to the log-shipper's socket
without ever blocking, drops and counts lines when the ring is full or no
log-shipper listens, reconnects with backoff (100 ms doubling to 2 s) and, once
connected, first sends a dropped record. When the command exits it flushes for
up to 2 s and exits with the command's status.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

try:
    from slipway.contracts import dynoinit
except ImportError:  # inside a dyno: the contract's file is mounted beside this one
    import dynoinit  # type: ignore[no-redef, import-not-found, unused-ignore]

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class Relay:
    """Ring, drop counting and the socket, driven by one selector loop."""

    def __init__(self, path: str, budget: int) -> None:
        self.path = path
        self.budget = budget
        self.ring: collections.deque[bytes] = collections.deque()
        self.held = 0
        self.dropped = 0
        self.dropped_since = 0
        self.sock: socket.socket | None = None
        self.out = b""
        self.backoff = 0.1
        self.retry_at = 0.0

    def line(self, kind: int, data: bytes) -> None:
        now = time.time_ns()
        for i in range(0, max(len(data), 1), dynoinit.MAX_LINE):
            piece = data[i : i + dynoinit.MAX_LINE]
            if self.held + len(piece) > self.budget:
                if not self.dropped:
                    self.dropped_since = now
                self.dropped += 1
                continue
            self.ring.append(dynoinit.encode_record(kind, now, piece))
            self.held += len(piece)

    def connect(self, selector: selectors.BaseSelector) -> None:
        if self.sock is not None or time.monotonic() < self.retry_at:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 2.0)
            return
        sock.setblocking(False)
        self.sock = sock
        self.backoff = 0.1
        self.out = dynoinit.LOG_MAGIC
        if self.dropped:
            self.out += dynoinit.encode_dropped(time.time_ns(), self.dropped, self.dropped_since)
            self.dropped = 0
        selector.register(sock, selectors.EVENT_READ, "socket")

    def lost(self, selector: selectors.BaseSelector) -> None:
        assert self.sock is not None
        selector.unregister(self.sock)
        self.sock.close()
        self.sock = None
        self.out = b""  # a record cut in half is lost with its connection
        self.retry_at = time.monotonic() + self.backoff

    def flush(self, selector: selectors.BaseSelector) -> None:
        if self.sock is None:
            return
        while True:
            if not self.out:
                batch: list[bytes] = []
                size = 0
                while self.ring and size < 1 << 16:
                    record = self.ring.popleft()
                    self.held -= len(record) - dynoinit.RECORD.size
                    batch.append(record)
                    size += len(record)
                if not batch:
                    return
                self.out = b"".join(batch)
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            except OSError:
                self.lost(selector)
                return
            self.out = self.out[sent:]

    @property
    def idle(self) -> bool:
        return not self.ring and not self.out


def main(argv: list[str]) -> int:
    budget, path = dynoinit.RING_DEFAULT, dynoinit.LOG_SOCKET
    while argv and argv[0] != "--":
        option, value, argv = argv[0], argv[1], argv[2:]
        if option == "--buffer":
            budget = int(value)
        elif option == "--socket":
            path = value
    command = argv[1:]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    for signum in _FORWARDED:
        signal.signal(signum, lambda s, _f: os.killpg(child.pid, s))
    relay = Relay(path, budget)
    selector = selectors.DefaultSelector()
    rest: dict[int, bytes] = {}
    for pipe, kind in ((child.stdout, dynoinit.KIND_STDOUT), (child.stderr, dynoinit.KIND_STDERR)):
        assert pipe is not None
        os.set_blocking(pipe.fileno(), False)
        selector.register(pipe.fileno(), selectors.EVENT_READ, kind)
        rest[kind] = b""
    open_pipes = 2
    deadline = None
    while True:
        relay.connect(selector)
        relay.flush(selector)
        if open_pipes == 0:
            if deadline is None:
                deadline = time.monotonic() + 2.0
            if relay.idle or time.monotonic() > deadline:
                break
        for key, _ in selector.select(timeout=0.05):
            if key.data == "socket":
                assert relay.sock is not None
                try:
                    gone = relay.sock.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    relay.lost(selector)
                continue
            kind = key.data
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                selector.unregister(key.fd)
                open_pipes -= 1
                if rest[kind]:
                    relay.line(kind, rest[kind])
                continue
            *lines, rest[kind] = (rest[kind] + chunk).split(b"\n")
            for line in lines:
                relay.line(kind, line)
            while len(rest[kind]) > dynoinit.MAX_LINE:  # a long line goes out in pieces
                relay.line(kind, rest[kind][: dynoinit.MAX_LINE])
                rest[kind] = rest[kind][dynoinit.MAX_LINE :]
    status = child.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
