"""Run a child server in the foreground until SIGTERM/SIGINT, as the supervisor runs it.

`python -m slipway.libs.natsserver` and `python -m slipway.libs.haproxy` both start
a server process, wait until they are told to stop or the server dies, then
stop it (`stop_child`) and exit with its status.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Protocol


class ChildServer(Protocol):
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None: ...


def stop_child(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a child server gracefully (SIGTERM), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_until_signalled(server: ChildServer) -> int:
    """Block until SIGTERM/SIGINT or the server's exit; stop it; its exit status (0 if asked)."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping and server.process is not None and server.process.poll() is None:
        time.sleep(0.2)
    code = server.process.returncode if server.process and server.process.poll() else 0
    server.stop()
    return code or 0
