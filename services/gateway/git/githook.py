"""The pre-receive hook of every app repository: hand the push to the gateway, print the build.

Run by `git receive-pack` (never by hand) as `python -m slipway.services.gateway.git.githook`
or through the hook file the gateway writes. Its environment carries only
`SLIPWAY_GIT_SOCKET` (the gateway's hook channel) and `SLIPWAY_PUSH_ID` (which
push this is); git adds its own variables, including the quarantine where the
pushed objects wait, which `git archive` needs. Whatever the gateway says is
printed as it comes; git shows it as `remote:` lines. Exit 0 lets git move the
branch; anything else refuses the push.

Deliberately small: the standard library only, so a push does not wait for the
platform's imports.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from typing import Any

FRAME = struct.Struct(">I")
CHUNK = 64 * 1024


def send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(FRAME.pack(len(payload)) + payload)


def receive(sock: socket.socket) -> dict[str, Any]:
    head = _exactly(sock, FRAME.size)
    (length,) = FRAME.unpack(head)
    message = json.loads(_exactly(sock, length))
    if not isinstance(message, dict):
        raise ConnectionError("malformed message from the gateway")
    return message


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        data += chunk
    return data


def send_archive(sock: socket.socket, rev: str) -> None:
    """Stream `git archive --format=tar.gz <rev>` as frames, ending with an empty one."""
    with subprocess.Popen(
        ["git", "archive", "--format=tar.gz", rev],
        stdout=subprocess.PIPE,
    ) as archive:
        assert archive.stdout is not None
        while chunk := archive.stdout.read(CHUNK):
            send(sock, chunk)
        if archive.wait() != 0:
            raise ConnectionError(f"git archive {rev} failed")
    send(sock, b"")


def say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> int:
    """Run the hook; the exit status git acts on."""
    path = os.environ.get("SLIPWAY_GIT_SOCKET", "")
    push_id = os.environ.get("SLIPWAY_PUSH_ID", "")
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            send(sock, json.dumps({"push_id": push_id, "updates": updates}).encode())
            while True:
                message = receive(sock)
                if "say" in message:
                    say(str(message["say"]))
                elif "archive" in message:
                    send_archive(sock, str(message["archive"]))
                elif "exit" in message:
                    return int(message["exit"])
    except (OSError, ConnectionError, ValueError) as exc:
        say(f" !     Lost the gateway during the deploy ({exc}); push rejected.\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
