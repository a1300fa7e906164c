"""A minimal WSGI app for Slipway's python buildpack: `gunicorn hello:app`."""

import os
import time


def _delay_seconds():
    # HELLO_DELAY_MS makes every answer slow on purpose (the alert tests raise p95 with it).
    try:
        return min(max(int(os.environ.get("HELLO_DELAY_MS", "0")), 0), 10_000) / 1000
    except ValueError:
        return 0


def app(environ, start_response):
    """Say hello, with the process type and the dyno's name when Slipway sets them."""
    delay = _delay_seconds()
    if delay:
        time.sleep(delay)
    dyno = os.environ.get("DYNO", "unknown dyno")
    body = f"Hello from python-hello on {dyno}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
