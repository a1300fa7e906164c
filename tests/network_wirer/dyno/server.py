"""A tiny web dyno for router tests: HTTP + a websocket echo on $PORT, stdlib only.

GET /anything   -> JSON {"dyno", "path", "headers"}
GET /sleep?s=N  -> answers after N seconds (the router's H12)
GET /ws         -> websocket: every text frame is echoed back as "<dyno>:<text>"

Every request line it answers is appended to /tmp/requests.log, the app's own access
log (read with `docker exec`, which is no request), so a test sees what reached it.
"""

import base64
import hashlib
import json
import os
import socketserver
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from urllib.parse import parse_qs, urlparse

DYNO = os.environ.get("DYNO", "web.?")
WS_MAGIC = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REQUEST_LOG = "/tmp/requests.log"


def read_frame(rfile: BufferedIOBase) -> tuple[int | None, bytes]:
    head = rfile.read(2)
    if len(head) < 2:
        return None, b""
    opcode = head[0] & 0x0F
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack(">Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = bytearray(rfile.read(length))
    for i in range(len(data)):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def write_frame(wfile: BufferedIOBase, opcode: int, data: bytes) -> None:
    header = bytes([0x80 | opcode])
    if len(data) < 126:
        header += bytes([len(data)])
    elif len(data) < 65536:
        header += bytes([126]) + struct.pack(">H", len(data))
    else:
        header += bytes([127]) + struct.pack(">Q", len(data))
    wfile.write(header + data)
    wfile.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # What an app's web server writes to its access log (gunicorn's, say): one line
        # per request it answered, whoever sent it.
        with open(REQUEST_LOG, "a") as log:
            log.write(f"{self.requestline} {self.headers.get('User-Agent', '-')}\n")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.websocket()
            return
        if url.path == "/sleep":
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
        body = json.dumps(
            {"dyno": DYNO, "path": self.path, "headers": dict(self.headers.items())}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def websocket(self) -> None:
        key = self.headers["Sec-WebSocket-Key"]
        digest = hashlib.sha1((key + WS_MAGIC).encode()).digest()  # noqa: S324 - RFC 6455
        accept = base64.b64encode(digest).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        while True:
            opcode, data = read_frame(self.rfile)
            if opcode is None or opcode == 0x8:
                write_frame(self.wfile, 0x8, b"")
                break
            if opcode == 0x9:
                write_frame(self.wfile, 0xA, data)
            elif opcode == 0x1:
                write_frame(self.wfile, 0x1, f"{DYNO}:".encode() + data)
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    socketserver.TCPServer.allow_reuse_address = True
    port = int(os.environ.get("PORT", "5000"))
    Server(("0.0.0.0", port), Handler).serve_forever()  # noqa: S104 - a dyno listens everywhere
