"""Which dyno containers run on this host: from Docker's listing and events, checked by inspect.

Dynos are containers carrying this installation's managed label (`LABEL_MANAGED`
with the scope's value) plus `LABEL_APP`, `LABEL_TEAM` and `LABEL_DYNO`.
Subscribing to `start`/`die`/`destroy` events before listing leaves no gap; the
set of running dynos is what the metrics sampler walks.

The receiver (receiver.py) asks `identify` for the container a connection came
from: a cached inspect, so the labels, never anything the dyno says, decide
whose lines they are. Containers that are not this installation's dynos are
remembered for a while too, so a stranger reconnecting costs no inspect.
Docker's own log stream is not read: dyno output reaches log-shipper through
the dyno init's socket.
"""

from __future__ import annotations

import calendar
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiodocker
import aiohttp
import structlog

from slipway.contracts.scheduler import LABEL_APP, LABEL_DYNO, LABEL_MANAGED, LABEL_TEAM
from slipway.libs import dockerraw

log = structlog.get_logger("slipway.log_shipper.dynos")

_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
_EVENTS = ["start", "die", "destroy"]
STRANGERS_KEPT = 1024  # containers known not to be dynos of this installation
STRANGER_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Dyno:
    """What the labels of one container say, and when it (last) started."""

    container_id: str
    app_id: str
    team_id: str
    dyno: str
    started_ns: int = 0


def docker_time_ns(stamp: str) -> int:
    """Docker's RFC 3339 time (`2026-11-27T21:00:00.123456789Z`, any fraction) in ns; 0 if unset."""
    if len(stamp) < 19 or stamp.startswith("0001-"):
        return 0
    seconds = calendar.timegm(
        (
            int(stamp[0:4]),
            int(stamp[5:7]),
            int(stamp[8:10]),
            int(stamp[11:13]),
            int(stamp[14:16]),
            int(stamp[17:19]),
        )
    )
    fraction = stamp[20:].rstrip("Z") if len(stamp) > 20 and stamp[19] == "." else ""
    digits = "".join(c for c in fraction if c.isdigit())
    return seconds * 1_000_000_000 + int((digits + "000000000")[:9])


def dyno_of(raw: dict[str, Any], managed: str) -> Dyno | None:
    """The dyno an inspected container is, or None if it is not one of this installation's."""
    labels: dict[str, str] = (raw.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_MANAGED) != managed or not labels.get(LABEL_APP):
        return None
    if not labels.get(LABEL_TEAM):
        # Without its team the lines cannot be sealed: better refused than stored unsealed.
        log.warning("dynos.no_team_label", container=str(raw.get("Id", ""))[:12])
        return None
    return Dyno(
        container_id=str(raw["Id"]),
        app_id=labels[LABEL_APP],
        team_id=labels[LABEL_TEAM],
        dyno=labels.get(LABEL_DYNO, "unknown"),
        started_ns=docker_time_ns(str((raw.get("State") or {}).get("StartedAt") or "")),
    )


class DynoRegistry:
    """This host's dyno containers: the running ones, and a cached answer for any id."""

    def __init__(self, docker: aiodocker.Docker, managed: str) -> None:
        self.docker = docker
        self.managed = managed
        self.running: dict[str, Dyno] = {}
        self._known: dict[str, Dyno] = {}
        self._strangers: OrderedDict[str, float] = OrderedDict()
        self.inspects = 0

    async def run(self) -> None:
        """Keep `running` current until cancelled (the caller reconnects on errors)."""
        filters = json.dumps(
            {"type": ["container"], "label": [f"{LABEL_MANAGED}={self.managed}"], "event": _EVENTS}
        )
        async with dockerraw.query(  # aiodocker has no raw streaming API
            self.docker, "events", params={"filters": filters}, timeout=_NO_TIMEOUT
        ) as events:
            listing = await self.docker.containers.list(
                filters=json.dumps({"label": [f"{LABEL_MANAGED}={self.managed}"]})
            )
            for container in listing:
                await self._refresh(str(container.id))
            async for line in events.content:
                if line.strip():
                    event = json.loads(line)
                    container_id = str(event.get("id") or event.get("Actor", {}).get("ID"))
                    if event.get("status") == "start" or event.get("Action") == "start":
                        await self._refresh(container_id)
                    else:
                        self.running.pop(container_id, None)
                        if event.get("Action") == "destroy" or event.get("status") == "destroy":
                            self._known.pop(container_id, None)

    async def identify(self, container_id: str) -> Dyno | None:
        """The dyno with this container id, or None (not a dyno of this installation)."""
        known = self._known.get(container_id)
        if known is not None:
            return known
        seen = self._strangers.get(container_id)
        if seen is not None and time.monotonic() - seen < STRANGER_TTL:
            return None
        return await self._refresh(container_id)

    async def _refresh(self, container_id: str) -> Dyno | None:
        self.inspects += 1
        try:
            raw: dict[str, Any] | None = await self.docker.containers.container(container_id).show()
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            raw = None
        dyno = dyno_of(raw, self.managed) if raw is not None else None
        if dyno is None:
            self._strangers[container_id] = time.monotonic()
            self._strangers.move_to_end(container_id)
            while len(self._strangers) > STRANGERS_KEPT:
                self._strangers.popitem(last=False)
            return None
        self._known[container_id] = dyno
        if raw is not None and (raw.get("State") or {}).get("Running"):
            self.running[container_id] = dyno
        return dyno
