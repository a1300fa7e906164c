"""One look at the platform: who answers, what lags, which hosts, disks and backups.

`Looker.look()` asks, in parallel and each with a bound, every source the monitor may
read (the NATS permissions of contracts/monitor.py's docstring) and returns what it
saw as plain data; judging it (green, yellow, red, alerts) is `health.py`'s, a pure
function, so both can be tested apart. A source that could not be read this pass is
named in `Seen.unread`: the alerts that depend on it neither fire nor resolve then.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import nats.errors
import structlog

from slipway.contracts import backup as bc
from slipway.contracts import disk, subjects
from slipway.contracts.router import (
    ROUTER_CERTS_LIST,
    ListRouterCertificates,
    RouterCertificate,
)
from slipway.contracts.scheduler import HOSTS_LIST, HostInfo, ListHosts
from slipway.libs.bus import Bus
from slipway.libs.natsauth import STREAMS

log = structlog.get_logger("slipway.monitor.status")

_JS_API = "$JS.API"
CALL_TIMEOUT = 2.0  # a source slower than this is unread this pass, not a stalled pass
CERTIFICATES_PER_ROUTER = 500  # the soonest to expire: the ones an alert can be about
_readings = msgspec.json.Decoder(disk.DiskReadings)


@dataclass(frozen=True, slots=True)
class InstanceSeen:
    service: str
    instance: str
    version: str
    started: str  # ISO 8601 from the instance
    requests: int
    errors: int
    last_error: str


@dataclass(frozen=True, slots=True)
class ConsumerSeen:
    stream: str
    name: str
    pending: int
    ack_pending: int
    redelivered: int


@dataclass
class Seen:
    """Everything one pass read; `unread` names the sources that failed."""

    at: float
    instances: list[InstanceSeen] = field(default_factory=list)
    consumers: list[ConsumerSeen] = field(default_factory=list)
    hosts: list[HostInfo] = field(default_factory=list)
    disks: list[tuple[disk.DiskReadings, disk.DiskReading]] = field(default_factory=list)
    backups: list[bc.DatabaseHealth] = field(default_factory=list)
    certificates: list[tuple[str, RouterCertificate]] = field(default_factory=list)  # router
    unread: dict[str, str] = field(default_factory=dict)  # source -> why


# The label the gateway gives JetStream's folder in its readings (services/gateway/app.py).
BUS_STORE_LABEL = "bus store"


class DiskReadings:
    """The latest readings of every service instance, as they publish them."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], disk.DiskReadings] = {}

    def record(self, data: bytes) -> None:
        try:
            readings = _readings.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("monitor.bad_disk_readings", error=str(exc))
            return
        self.latest[(readings.service, readings.instance)] = readings

    def bus_store_above(self, mark: float, now: float) -> bool:
        """Whether the bus's store (JetStream's folder, as the gateway watches it) is past
        `mark` percent in a fresh reading."""
        return any(
            r.label.startswith(BUS_STORE_LABEL) and r.used_percent >= mark
            for _, r in self.fresh(now)
        )

    def fresh(self, now: float) -> list[tuple[disk.DiskReadings, disk.DiskReading]]:
        """Each folder's reading, from instances heard within three of their intervals."""
        found = []
        for key, readings in list(self.latest.items()):
            if now - readings.at > 3 * readings.interval:
                del self.latest[key]  # that instance stopped: its folders are not known now
                continue
            found += [(readings, reading) for reading in readings.readings]
        return found


class Looker:
    """Reads the platform's state through the monitor's own NATS user."""

    def __init__(self, bus: Bus, disks: DiskReadings, *, discovery_wait: float) -> None:
        self.bus = bus
        self.disks = disks
        self.discovery_wait = discovery_wait

    async def look(self) -> Seen:
        seen = Seen(at=time.time())
        sources = {
            "services": self._instances(seen),
            "consumers": self._consumers(seen),
            "hosts": self._hosts(seen),
            "backups": self._backups(seen),
            "certificates": self._certificates(seen),
        }
        results = await asyncio.gather(*sources.values(), return_exceptions=True)
        for name, result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                seen.unread[name] = str(result) or type(result).__name__
                log.warning("monitor.source_unread", source=name, error=repr(result))
        seen.disks = self.disks.fresh(seen.at)
        return seen

    async def _instances(self, seen: Seen) -> None:
        for body in await self._ask_everyone(subjects.srv_subjects("STATS", "x", "x")[0]):
            endpoints = body.get("endpoints") or []
            errors = [e for e in endpoints if e.get("num_errors")]
            last = max(errors, key=lambda e: e.get("num_errors", 0)) if errors else None
            seen.instances.append(
                InstanceSeen(
                    service=str(body.get("name", "")),
                    instance=str(body.get("id", "")),
                    version=str(body.get("version", "")),
                    started=str(body.get("started", "")),
                    requests=sum(int(e.get("num_requests", 0)) for e in endpoints),
                    errors=sum(int(e.get("num_errors", 0)) for e in endpoints),
                    last_error=str(last.get("last_error") or "") if last else "",
                )
            )

    async def _ask_everyone(self, subject: str) -> list[dict[str, Any]]:
        """Every answer to a discovery request within the wait (a request, many replies)."""
        inbox = self.bus.nc.new_inbox()
        subscription = await self.bus.nc.subscribe(inbox)
        answers: list[dict[str, Any]] = []
        try:
            await self.bus.nc.publish(subject, b"", reply=inbox)
            deadline = time.monotonic() + self.discovery_wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await subscription.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(body, dict):
                    answers.append(body)
        finally:
            await subscription.unsubscribe()
        return answers

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body or {}).encode()
        msg = await self.bus.nc.request(subject, payload, timeout=CALL_TIMEOUT)
        answer: dict[str, Any] = json.loads(msg.data)
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error'].get('description', answer['error'])}")
        return answer

    async def _consumers(self, seen: Seen) -> None:
        for stream in STREAMS:
            names: list[str] = []
            offset = 0
            while True:
                page = await self._api(f"{_JS_API}.CONSUMER.NAMES.{stream}", {"offset": offset})
                found = page.get("consumers") or []
                names += found
                offset += len(found)
                if not found or offset >= int(page.get("total", 0)):
                    break
            for name in sorted(names):
                info = await self._api(f"{_JS_API}.CONSUMER.INFO.{stream}.{name}")
                seen.consumers.append(
                    ConsumerSeen(
                        stream=stream,
                        name=name,
                        pending=int(info.get("num_pending", 0)),
                        ack_pending=int(info.get("num_ack_pending", 0)),
                        redelivered=int(info.get("num_redelivered", 0)),
                    )
                )

    async def _hosts(self, seen: Seen) -> None:
        seen.hosts = (await self.bus.call(HOSTS_LIST, ListHosts(), timeout=CALL_TIMEOUT)).hosts

    async def _backups(self, seen: Seen) -> None:
        gathered = await self.bus.gather(
            bc.BACKUP_HEALTH, bc.GetBackupHealth(), timeout=CALL_TIMEOUT
        )
        if gathered.errors:
            raise RuntimeError("; ".join(f"{k}: {v}" for k, v in gathered.errors.items()))
        for answer in gathered.replies.values():
            seen.backups += answer.databases

    async def _certificates(self, seen: Seen) -> None:
        gathered = await self.bus.gather(
            ROUTER_CERTS_LIST,
            ListRouterCertificates(limit=CERTIFICATES_PER_ROUTER),
            timeout=CALL_TIMEOUT,
        )
        if gathered.errors:
            raise RuntimeError("; ".join(f"{k}: {v}" for k, v in gathered.errors.items()))
        if not gathered.replies:
            # No router answered: that is not "no certificate expires" (service_down says
            # why network-wirer is silent); an alert already firing stays.
            raise RuntimeError("no router answered")
        for answer in gathered.replies.values():
            seen.certificates += [(answer.router_id, c) for c in answer.certificates]


def started_at(text: str) -> float | None:
    """An instance's ISO start time as epoch seconds (None when it sent none)."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
