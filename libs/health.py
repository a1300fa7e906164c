"""Wait until NATS answers and then until services answer the micro-service discovery ping.

    python -m slipway.libs.health --wait keyring gateway --timeout 60

Each service answers `$SRV.PING.<name>` once it has started (libs/service/discovery.py),
so an answer means: connected to NATS, streams ensured, resources open, handlers serving.
Exit status 0 when every named service answered in time, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from slipway.contracts import subjects
from slipway.libs.natsauth import OPERATOR, stored_password


class PingReply(msgspec.Struct, kw_only=True):
    """What a service answers to a discovery ping (nats.io ADR-32 `ping_response`)."""

    name: str
    id: str
    version: str = ""
    type: str = ""


@dataclass
class HealthReport:
    """What answered before the deadline."""

    nats_reachable: bool = False
    answered: dict[str, PingReply] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.nats_reachable and not self.missing


_decode_ping = msgspec.json.Decoder(PingReply).decode


def default_nats_url() -> str:
    """$SLIPWAY_NATS_URL, else the loopback port the supervisor uses ($SLIPWAY_NATS_PORT)."""
    port = os.environ.get("SLIPWAY_NATS_PORT", "4222")
    return os.environ.get("SLIPWAY_NATS_URL", f"nats://127.0.0.1:{port}")


def _credentials() -> dict[str, str]:
    """$SLIPWAY_NATS_USER/PASSWORD, else the operator's from a hardened server's user table."""
    user, password = os.environ.get("SLIPWAY_NATS_USER"), os.environ.get("SLIPWAY_NATS_PASSWORD")
    if user and password:
        return {"user": user, "password": password}
    home = Path(os.environ.get("SLIPWAY_HOME", "var"))
    stored = stored_password(home / "nats", OPERATOR)
    return {"user": OPERATOR, "password": stored} if stored else {}


async def _quiet(exc: Exception) -> None:
    # Connection errors are expected while the server starts; the caller reports the outcome.
    return None


async def _connect(url: str, deadline: float, interval: float) -> NatsClient | None:
    while True:
        try:
            # nats-py retries a refused first connect forever unless attempts are capped
            # (0 means "no cap" there); this loop does the retrying, up to the deadline.
            return await nats.connect(
                url,
                **_credentials(),
                # Services may answer discovery only into the operator's inbox (natsauth).
                inbox_prefix=subjects.inbox_prefix(OPERATOR),
                connect_timeout=max(min(deadline - time.monotonic(), 1.0), 0.05),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=interval,
                error_cb=_quiet,
            )
        except (OSError, TimeoutError, nats.errors.Error):
            if time.monotonic() + interval > deadline:
                return None
            await asyncio.sleep(interval)


async def ping(
    nc: NatsClient,
    service: str,
    *,
    timeout: float = 1.0,
) -> PingReply | None:
    """One discovery ping to `service`; its reply, or None if no instance answered in time."""
    subject = subjects.srv_subjects("PING", service, "")[1]
    try:
        msg = await nc.request(subject, b"", timeout=timeout)
    except (TimeoutError, nats.errors.NoRespondersError):
        return None
    try:
        reply = _decode_ping(msg.data)
    except msgspec.DecodeError:
        return None
    return reply if reply.name == service else None


async def wait_for_services(
    url: str,
    services: Sequence[str],
    *,
    # A deadline, not a cancellation: at the end it still reports who answered.
    timeout: float = 60.0,
    interval: float = 0.2,
) -> HealthReport:
    """Wait up to `timeout` seconds for NATS at `url`, then for every service to answer a ping."""
    deadline = time.monotonic() + timeout
    report = HealthReport(missing=list(services))
    nc = await _connect(url, deadline, interval)
    if nc is None:
        return report
    report.nats_reachable = True
    try:
        while report.missing:
            for service in list(report.missing):
                remaining = deadline - time.monotonic()
                reply = await ping(nc, service, timeout=max(min(remaining, 1.0), 0.05))
                if reply is not None:
                    report.answered[service] = reply
                    report.missing.remove(service)
            if not report.missing or time.monotonic() + interval > deadline:
                break
            await asyncio.sleep(interval)
    finally:
        await nc.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: print what answered; exit 1 if NATS or a service did not in time."""
    parser = argparse.ArgumentParser(
        prog="python -m slipway.libs.health",
        description="Wait until nats-server and the named services answer.",
    )
    parser.add_argument("--url", default=default_nats_url(), help="NATS URL")
    parser.add_argument(
        "--wait",
        nargs="*",
        default=[],
        metavar="SERVICE",
        help="services that must answer $SRV.PING.<name>",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds, for everything")
    args = parser.parse_args(argv)
    report = asyncio.run(wait_for_services(args.url, args.wait, timeout=args.timeout))
    if not report.nats_reachable:
        print(f"nats-server at {args.url} did not answer within {args.timeout:g}s", file=sys.stderr)
        return 1
    print(f"nats-server answers at {args.url}")
    for name, reply in report.answered.items():
        print(f"{name} answers (instance {reply.id}, version {reply.version})")
    if report.missing:
        print(
            f"not answering after {args.timeout:g}s: {', '.join(report.missing)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
