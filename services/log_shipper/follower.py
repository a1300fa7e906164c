"""Following every dyno container's stdout and stderr through the Docker API, losing nothing.

Containers are found by label (`LABEL_MANAGED`, with `LABEL_APP`, `LABEL_TEAM`,
`LABEL_DYNO`); new ones arrive as Docker `start` events. Subscribing to events
before listing containers leaves no gap between the two.

Each container is read with `timestamps=1` and, once a cursor exists,
`since=<cursor>`: the lines Docker sends again at the cursor's exact nanosecond
are skipped by count. Cursors move only with the batch that stores the lines
(see history.py), so after a kill -9 the log is read again from the last
stored line: nothing lost, nothing doubled. A dyno restarted in place (same
container) ends the follow stream; its `start` event (or the container still
running) opens a new one from the cursor.

The raw multiplexed stream is read over HTTP/1.0 (dockerstream.py) and parsed
here rather than through aiodocker: at 100,000 lines a second the per-line
cost decides the rate.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import aiodocker
import aiohttp
import structlog

from slipway.contracts.scheduler import LABEL_APP, LABEL_DYNO, LABEL_MANAGED, LABEL_TEAM
from slipway.libs import dockerraw
from slipway.libs.errors import SlipwayError
from slipway.services.log_shipper import dockerstream
from slipway.services.log_shipper.history import History, RawLine
from slipway.services.log_shipper.store import Cursor

log = structlog.get_logger("slipway.log_shipper.follower")

_FRAME = struct.Struct(">BxxxL")
_STDERR = 2
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)


@dataclass(frozen=True, slots=True)
class Dyno:
    """What the labels of one container say."""

    container_id: str
    app_id: str
    team_id: str
    dyno: str


class TimestampParser:
    """Docker's RFC 3339 nano timestamps to integer nanoseconds, caching the seconds part."""

    def __init__(self) -> None:
        self._prefix = ""
        self._seconds = 0

    def ns(self, stamp: str) -> int:
        """`2026-11-27T21:00:00.123456789Z` (fraction of any length, or none) in ns."""
        prefix = stamp[:19]
        if prefix != self._prefix:
            self._seconds = calendar.timegm(
                (
                    int(prefix[0:4]),
                    int(prefix[5:7]),
                    int(prefix[8:10]),
                    int(prefix[11:13]),
                    int(prefix[14:16]),
                    int(prefix[17:19]),
                )
            )
            self._prefix = prefix
        fraction = stamp[20:-1] if len(stamp) > 20 and stamp[19] == "." else ""
        return self._seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


def since_param(ts_ns: int) -> str:
    """Docker's `since`: seconds with a nanosecond fraction."""
    return f"{ts_ns // 1_000_000_000}.{ts_ns % 1_000_000_000:09d}"


class Follower:
    """One host's followers: a task per dyno container, started by listing and by events."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        docker_url: str,
        history: History,
        cursors: dict[str, Cursor],
        managed: str,
    ) -> None:
        self.docker = docker
        self.docker_url = docker_url
        self.history = history
        self.cursors = cursors
        self.managed = managed
        self.dynos: dict[str, Dyno] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self.lines_read = 0

    async def run(self) -> None:
        """Follow every managed container until cancelled."""
        label = f"{LABEL_MANAGED}={self.managed}"
        filters = json.dumps({"type": ["container"], "label": [label], "event": ["start"]})
        async with dockerraw.query(  # aiodocker has no raw streaming API
            self.docker, "events", params={"filters": filters}, timeout=_NO_TIMEOUT
        ) as events:
            listing = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": [label]})
            )
            for container in listing:
                self.follow(container.id)
            async for line in events.content:
                if line.strip():
                    event = json.loads(line)
                    self.follow(str(event.get("id") or event.get("Actor", {}).get("ID")))

    def follow(self, container_id: str) -> None:
        """Make sure the container is followed (again, if its stream already ended)."""
        task = self._tasks.get(container_id)
        if task is not None and not task.done():
            self._again.add(container_id)
            return
        self._tasks[container_id] = asyncio.create_task(
            self._follow(container_id), name=f"follow:{container_id[:12]}"
        )

    async def stop(self) -> None:
        """Cancel every follower (their unstored lines are read again next start)."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, container_id: str) -> None:
        try:
            while await self._follow_once(container_id):
                pass
        finally:
            self.dynos.pop(container_id, None)

    async def _follow_once(self, container_id: str) -> bool:
        """Read the container's log once to its end; whether to read it again."""
        self._again.discard(container_id)
        try:
            info = await self._inspect(container_id)
            if info is None:
                return False
            dyno, running = info
            self.dynos[container_id] = dyno
            await self._read(dyno, follow=running)
            self.history.seal_soon(dyno.app_id)
        except (aiodocker.DockerError, OSError, SlipwayError) as exc:
            # The engine restarted or the stream broke: try again from the cursor.
            log.warning("follower.stream_failed", container=container_id[:12], error=repr(exc))
            await asyncio.sleep(1.0)
            return True
        if container_id in self._again:
            return True
        again = await self._inspect(container_id)
        return again is not None and again[1]

    async def _inspect(self, container_id: str) -> tuple[Dyno, bool] | None:
        try:
            raw = await self.docker.containers.get(container_id)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise
        labels: dict[str, str] = raw["Config"].get("Labels") or {}
        if labels.get(LABEL_MANAGED) != self.managed or not labels.get(LABEL_APP):
            return None
        if not labels.get(LABEL_TEAM):
            # Without its team the lines cannot be sealed: better unread (Docker keeps them).
            log.warning("follower.no_team_label", container=container_id[:12])
            return None
        dyno = Dyno(
            container_id=raw["Id"],
            app_id=labels[LABEL_APP],
            team_id=labels[LABEL_TEAM],
            dyno=labels.get(LABEL_DYNO, "unknown"),
        )
        return dyno, bool(raw["State"].get("Running"))

    async def _read(self, dyno: Dyno, *, follow: bool) -> None:
        cursor = self.cursors.get(dyno.container_id)
        params: dict[str, Any] = {
            "stdout": "1",
            "stderr": "1",
            "timestamps": "1",
            "follow": "1" if follow else "0",
        }
        if cursor is not None:
            params["since"] = since_param(cursor.ts_ns)
        else:
            cursor = Cursor(dyno.container_id, dyno.app_id, dyno.dyno, 0, 0)
        path = f"containers/{dyno.container_id}/logs"
        async with dockerstream.stream(self.docker_url, path, params) as blocks:
            parser = _LineParser(dyno, cursor)
            async for chunk in blocks:
                lines = parser.feed(chunk)
                if parser.moved:
                    self.lines_read += len(lines)
                    self.cursors[dyno.container_id] = parser.cursor
                    self.history.add(dyno.app_id, dyno.team_id, lines, parser.cursor)
                    parser.moved = False
                    await self.history.wait_room()


class _LineParser:
    """Docker's multiplexed log frames to lines, skipping those the cursor already covers."""

    def __init__(self, dyno: Dyno, cursor: Cursor) -> None:
        self.dyno = dyno
        self.cursor = cursor
        self._skip_ts = cursor.ts_ns
        self._skip_left = cursor.count
        self._ts = cursor.ts_ns
        self._count = cursor.count
        self._rest = b""
        self._stamps = TimestampParser()
        self.moved = False

    def feed(self, chunk: bytes) -> list[RawLine]:
        """The complete lines in `chunk` (plus what was left of the one before)."""
        data = self._rest + chunk if self._rest else chunk
        out: list[RawLine] = []
        pos, end = 0, len(data)
        header = _FRAME.size
        name = self.dyno.dyno
        ns = self._stamps.ns
        ts, count = self._ts, self._count
        skip_ts, skip_left = self._skip_ts, self._skip_left
        while pos + header <= end:
            stream, size = _FRAME.unpack_from(data, pos)
            if pos + header + size > end:
                break
            payload = data[pos + header : pos + header + size].decode("utf-8", "replace")
            pos += header + size
            stamp, _, text = payload.partition(" ")
            line_ns = ns(stamp)
            if line_ns < skip_ts or (line_ns == skip_ts and skip_left > 0):
                if line_ns == skip_ts:
                    skip_left -= 1
                continue
            if line_ns == ts:
                count += 1
            else:
                ts, count = line_ns, 1
            if text.endswith("\n"):
                text = text[:-1]
            out.append((line_ns / 1e9, "app", name, text, stream == _STDERR))
        self._rest = data[pos:]
        self._skip_left = skip_left
        if ts != self._ts or count != self._count:
            self._ts, self._count = ts, count
            self.cursor = Cursor(self.dyno.container_id, self.dyno.app_id, name, ts, count)
            self.moved = True
        return out
