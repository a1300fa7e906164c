"""A minimal WSGI app for Slipway's python buildpack: `gunicorn hello:app`."""

import os


def app(environ, start_response):
    """Say hello, with the process type and the dyno's name when Slipway sets them."""
    dyno = os.environ.get("DYNO", "unknown dyno")
    body = f"Hello from python-hello on {dyno}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
