"""A webhook receiver on loopback that checks Heroku's HMAC signature, for the alert tests.

    with receiving(SECRET) as receiver:
        platform.cli("admin:webhooks:add", "-u", receiver.url, "-i", "alert", "-s", SECRET)
        ...
        receiver.alerts("disk", "fire")      # the signed alert posts seen so far

A post whose `Heroku-Webhook-Hmac-SHA256` is not the body's HMAC under the secret is
answered like any other (a real receiver would not tell a forger why) but only counted,
so a test can assert that none arrived.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver(ThreadingHTTPServer):
    """Records every POST whose signature checks out; others are counted as forged."""

    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secret = secret.encode()
        self.posts: list[dict[str, Any]] = []
        self.bad_signatures = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def alerts(self, kind: str, action: str) -> list[dict[str, Any]]:
        """The signed alert deliveries of `kind` ("disk", ...) and `action` (fire, resolve)."""
        return [
            p
            for p in list(self.posts)  # a copy: handler threads append meanwhile
            if p.get("action") == action and p.get("data", {}).get("kind") == kind
        ]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        sent = self.headers.get("Heroku-Webhook-Hmac-SHA256", "")
        expected = base64.b64encode(hmac.new(self.server.secret, body, hashlib.sha256).digest())
        if hmac.compare_digest(sent.encode(), expected):
            self.server.posts.append(json.loads(body))
        else:
            self.server.bad_signatures += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass  # the test asserts on what arrived; stderr noise helps nobody


@contextmanager
def receiving(secret: str) -> Iterator[Receiver]:
    """A Receiver serving on a thread until the block ends."""
    server = Receiver(secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
