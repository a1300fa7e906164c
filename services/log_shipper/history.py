"""Encrypted history: lines wait in memory, are sealed in batches, and read back by page.

Every line taken in gets the next sequence number of this host and goes to the
app's pending buffer; listeners (live tails, drains) see it at once. A batch is
sealed when it holds `batch_lines` lines or is `batch_seconds` old:

    payload = zlib(msgpack(list[LogEntry]))
    sealed  = envelope.encrypt(LOGS, Binding(team, app, "logs", batch_id), payload)

and, for a team that registered its own X25519 key, the payload is first sealed
to that key (`sealedbox.seal_to`), so the platform can write it and never read
it back. Nothing is written to disk before it is sealed: lines still pending
when log-shipper is killed are lost (dyno output arrives over a socket with
no replay; see receiver.py), at most `batch_seconds` of them.

Reads for a sealed team: stored batches cannot be opened by the platform, so
`read` answers the recent lines this process still holds in memory (up to
`sealed_recent_lines` per app, lost on restart, like Heroku's 1,500-line
buffer) with `sealed=True` and a notice; the archive is the customer's to
export and open with their private key.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from slipway.contracts.keyring import PUBKEY_GET, GetPublicKey, Purpose
from slipway.contracts.log_shipper import (
    ExportHistory,
    HistoryArchive,
    HistoryPage,
    LogEntry,
    ReadHistory,
    SealedBatch,
)
from slipway.contracts.logs import LogSource
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope, sealedbox
from slipway.libs.errors import Gone
from slipway.libs.storage import Database, claim
from slipway.libs.waits import wait_for_event
from slipway.services.log_shipper import store
from slipway.services.log_shipper.settings import LogShipperSettings
from slipway.services.log_shipper.store import BatchRow

log = structlog.get_logger("slipway.log_shipper.history")

KIND = "logs"
PAGE_BYTES = 1024 * 1024  # a page stays well under NATS's max payload
PAGE_LINES = 5000
_NO_LIMIT = 2**62
SEALED_NOTICE = (
    "This team's stored logs are sealed to its own key: only recent lines held in memory are shown."
)

# A raw line as the receiver or an event hands it over: (timestamp, source, dyno, text, stderr).
RawLine = tuple[float, LogSource, str, str, bool]
Listener = Callable[[str, Sequence[LogEntry]], None]

_ENTRIES = msgspec.msgpack.Decoder(list[LogEntry])
_ENCODER = msgspec.msgpack.Encoder()


@dataclass
class _Buffer:
    """Lines of one app not yet stored."""

    team_id: str
    entries: list[LogEntry] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)


class TeamKeys:
    """Which teams registered their own public key, asked of the keyring, kept a minute."""

    def __init__(self, bus: Bus, ttl: float = 60.0) -> None:
        self.bus = bus
        self.ttl = ttl
        self._known: dict[str, tuple[float, bytes | None]] = {}

    async def public_key(self, team_id: str) -> bytes | None:
        """The team's registered X25519 public key, or None."""
        cached = self._known.get(team_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        info = await self.bus.call(PUBKEY_GET, GetPublicKey(team_id=team_id))
        self._known[team_id] = (time.monotonic(), info.public_key)
        return info.public_key


class History:
    """Pending buffers, the sealing loop and paged reads for one host's log-shipper."""

    def __init__(
        self,
        db: Database,
        reader: Database,
        bus: Bus,
        settings: LogShipperSettings,
        first_seq: int,
    ) -> None:
        self.db = db
        self.reader = reader  # reads see committed batches only, never a half-written one
        self.bus = bus
        self.settings = settings
        self.host = settings.host_id
        self.keys = TeamKeys(bus)
        self.listeners: list[Listener] = []
        self._seq = first_seq
        self._pending: dict[str, _Buffer] = {}
        self._inflight: dict[str, list[LogEntry]] = {}
        self._recent: dict[str, collections.deque[LogEntry]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self.stored_lines = 0

    # ---- taking lines in ---------------------------------------------------------------

    def add(
        self,
        app_id: str,
        team_id: str,
        lines: Sequence[RawLine],
        message_id: str | None = None,
    ) -> asyncio.Future[None]:
        """Take lines in; the future resolves once they are stored (sealed and committed)."""
        buffer = self._pending.get(app_id)
        if buffer is None:
            buffer = self._pending[app_id] = _Buffer(team_id)
        seq = self._seq
        host = self.host
        entries = [
            LogEntry(
                host=host, seq=seq + i, timestamp=ts, source=src, dyno=dyno, text=text, stderr=err
            )
            for i, (ts, src, dyno, text, err) in enumerate(lines)
        ]
        self._seq = seq + len(entries)
        buffer.entries.extend(entries)
        if message_id is not None:
            buffer.claims.append(message_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buffer.waiters.append(done)
        if entries:
            for listener in self.listeners:
                listener(app_id, entries)
        if len(buffer.entries) >= self.settings.batch_lines:
            self._wake.set()
        if self.pending_lines() >= self.settings.pending_max_lines:
            self._room.clear()
        return done

    def seal_soon(self, app_id: str) -> None:
        """Seal the app's pending lines at the next turn (its dyno's connection just ended)."""
        buffer = self._pending.get(app_id)
        if buffer is not None:
            buffer.since = 0.0
            self._wake.set()

    def forget(self, app_id: str) -> None:
        """Drop what is held in memory for an app (it was destroyed)."""
        buffer = self._pending.pop(app_id, None)
        self._recent.pop(app_id, None)
        for waiter in buffer.waiters if buffer else ():
            if not waiter.done():
                waiter.set_result(None)

    def pending_lines(self) -> int:
        return sum(len(b.entries) for b in self._pending.values())

    async def wait_room(self) -> None:
        """Wait while too many lines are pending (the keyring is slow or down)."""
        await self._room.wait()

    def has_room(self) -> bool:
        """Whether more lines may be taken in now (else readers pause until `wait_room`)."""
        return self._room.is_set()

    async def seen(self, message_id: str) -> bool:
        """Whether an event's line was already stored (events are delivered at least once)."""
        row = await self.reader.fetchone(
            "SELECT 1 FROM processed_messages WHERE message_id = ?", (message_id,)
        )
        return row is not None

    # ---- sealing -------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Seal due batches until `stopping`, then seal what is left."""
        tick = max(self.settings.batch_seconds / 4, 0.02)
        failures = 0
        while not stopping.is_set():
            await wait_for_event(self._wake, tick)
            self._wake.clear()
            ok = await self.flush(force=False)
            failures = 0 if ok else failures + 1
            if failures:
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
        await self.flush(force=True)

    async def flush(self, *, force: bool) -> bool:
        """Seal every due buffer (all of them when `force`); False if one failed."""
        now = time.monotonic()
        ok = True
        for app_id in list(self._pending):
            buffer = self._pending[app_id]
            due = len(buffer.entries) >= self.settings.batch_lines or (
                now - buffer.since >= self.settings.batch_seconds
            )
            if not (force or due) or app_id in self._inflight:
                continue
            ok = await self._seal(app_id) and ok
        if self.pending_lines() < self.settings.pending_max_lines:
            self._room.set()
        return ok

    async def _seal(self, app_id: str) -> bool:
        buffer = self._pending.pop(app_id)
        if not buffer.entries:
            return await self._commit_empty(buffer)
        self._inflight[app_id] = buffer.entries
        try:
            row = await self._encrypt(app_id, buffer)
            async with self.db.transaction() as conn:
                await store.save_batch(conn, row)
                for message_id in buffer.claims:
                    await claim(conn, message_id)
        except Gone:
            # The team's key was shredded: its lines can never be stored, on purpose.
            log.warning("history.team_shredded", app_id=app_id, lines=len(buffer.entries))
            self._release(buffer)
            return True
        except Exception as exc:  # keyring down, disk full: keep the lines, try again
            log.warning("history.seal_failed", app_id=app_id, error=repr(exc))
            self._requeue(app_id, buffer)
            return False
        finally:
            self._inflight.pop(app_id, None)
        self.stored_lines += row.lines
        if row.sealed_to is not None:
            self._recent_of(app_id).extend(buffer.entries)
        self._release(buffer)
        return True

    @staticmethod
    def _release(buffer: _Buffer) -> None:
        for waiter in buffer.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _commit_empty(self, buffer: _Buffer) -> bool:
        # Claims without lines (an event whose lines were empty).
        if buffer.claims:
            async with self.db.transaction() as conn:
                for message_id in buffer.claims:
                    await claim(conn, message_id)
        for waiter in buffer.waiters:
            if not waiter.done():
                waiter.set_result(None)
        return True

    def _requeue(self, app_id: str, failed: _Buffer) -> None:
        newer = self._pending.get(app_id)
        if newer is not None:
            # Lines that arrived meanwhile are newer: keep them after the failed ones.
            failed.entries.extend(newer.entries)
            failed.claims.extend(newer.claims)
            failed.waiters.extend(newer.waiters)
        self._pending[app_id] = failed

    async def _encrypt(self, app_id: str, buffer: _Buffer) -> BatchRow:
        team_id = buffer.team_id
        batch_id = uuid.uuid4().hex
        place = Binding(team=team_id, app=app_id, kind=KIND, record=batch_id)
        public_key = await self.keys.public_key(team_id)
        entries = buffer.entries
        payload = await asyncio.to_thread(_pack, entries, public_key, place)
        data = await envelope.encrypt(self.bus, team_id, Purpose.LOGS, place, payload)
        return BatchRow(
            id=batch_id,
            app_id=app_id,
            team_id=team_id,
            host=self.host,
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
            first_ts=min(e.timestamp for e in entries),
            last_ts=max(e.timestamp for e in entries),
            lines=len(entries),
            size=len(data),
            sealed_to=sealedbox.fingerprint(public_key) if public_key else None,
            data=data,
        )

    def _recent_of(self, app_id: str) -> collections.deque[LogEntry]:
        recent = self._recent.get(app_id)
        if recent is None:
            recent = self._recent[app_id] = collections.deque(
                maxlen=self.settings.sealed_recent_lines
            )
        return recent

    # ---- reading -------------------------------------------------------------------------

    async def read(self, request: ReadHistory) -> HistoryPage:
        """The newest matching lines older than `before_seq`, oldest first, one page at most."""
        want = max(0, min(request.lines, PAGE_LINES))
        before_seq = request.before_seq
        match = _matcher(request, before_seq)
        found = [e for e in self._in_memory(request.app_id) if match(e)]
        sealed = False
        if len(found) < want:
            sealed = await self.keys.public_key(request.team_id) is not None
            if sealed:
                found = [e for e in self._recent.get(request.app_id, ()) if match(e)] + found
            else:
                found = await self._from_batches(request, match, before_seq, want, found)
        found.sort(key=lambda e: e.seq)
        page: list[LogEntry] = []
        size = 0
        for entry in reversed(found[-want:] if want else []):
            size += len(entry.text) + 64
            if size > PAGE_BYTES:
                break
            page.append(entry)
        page.reverse()
        more = len(page) < len(found) or (not sealed and len(found) >= want)
        return HistoryPage(
            app_id=request.app_id,
            lines=page,
            sealed=sealed,
            notice=SEALED_NOTICE if sealed else "",
            more=more and bool(page),
            host=self.host,
        )

    def _in_memory(self, app_id: str) -> list[LogEntry]:
        buffer = self._pending.get(app_id)
        return [*self._inflight.get(app_id, ()), *(buffer.entries if buffer else ())]

    async def _from_batches(
        self,
        request: ReadHistory,
        match: Callable[[LogEntry], bool],
        before_seq: int | None,
        want: int,
        found: list[LogEntry],
    ) -> list[LogEntry]:
        # Newest batch first, until enough lines match: a page opens few batches.
        sql = "SELECT * FROM batches WHERE app_id = ? AND first_seq < ? ORDER BY last_seq DESC"
        limit = before_seq if before_seq is not None else _NO_LIMIT
        async with self.reader.conn.execute(sql, (request.app_id, limit)) as rows:
            async for r in rows:
                entries = await self.open_batch(store.batch_of(r))
                found = [e for e in entries if match(e)] + found
                if len(found) >= want:
                    break
        return found

    async def export(self, request: ExportHistory) -> HistoryArchive:
        """Batches sealed to the team's key, outer envelope removed: only its owner opens them."""
        sql = (
            "SELECT * FROM batches WHERE app_id = ? AND last_seq > ? AND sealed_to IS NOT NULL"
            " ORDER BY last_seq"
        )
        found: list[SealedBatch] = []
        size = 0
        more = False
        after = request.after.get(self.host, 0)
        async with self.reader.conn.execute(sql, (request.app_id, after)) as rows:
            async for r in rows:
                row = store.batch_of(r)
                if found and size + row.size > PAGE_BYTES * 4:
                    more = True
                    break
                place = Binding(team=row.team_id, app=row.app_id, kind=KIND, record=row.id)
                box = await envelope.decrypt(self.bus, row.team_id, Purpose.LOGS, place, row.data)
                size += len(box)
                found.append(_sealed_batch(row, box))
        return HistoryArchive(batches=found, more=more, host=self.host)

    async def open_batch(self, row: BatchRow) -> list[LogEntry]:
        """The lines of a stored batch (not for batches sealed to a team's key)."""
        place = Binding(team=row.team_id, app=row.app_id, kind=KIND, record=row.id)
        payload = await envelope.decrypt(self.bus, row.team_id, Purpose.LOGS, place, row.data)
        return await asyncio.to_thread(_unpack, payload)


def _matcher(request: ReadHistory, before_seq: int | None) -> Callable[[LogEntry], bool]:
    dyno, source = request.dyno, request.source
    limit = before_seq if before_seq is not None else _NO_LIMIT
    by_type = dyno is not None and "." not in dyno

    def match(entry: LogEntry) -> bool:
        if entry.seq >= limit:
            return False
        if source is not None and entry.source != source:
            return False
        if dyno is None:
            return True
        if by_type:
            return entry.dyno.split(".", 1)[0] == dyno
        return entry.dyno == dyno

    return match


def _sealed_batch(row: BatchRow, box: bytes) -> SealedBatch:
    return SealedBatch(
        id=row.id,
        team_id=row.team_id,
        app_id=row.app_id,
        host=row.host,
        first_seq=row.first_seq,
        last_seq=row.last_seq,
        first_ts=row.first_ts,
        last_ts=row.last_ts,
        lines=row.lines,
        fingerprint=row.sealed_to or "",
        box=box,
    )


def _pack(entries: list[LogEntry], public_key: bytes | None, place: Binding) -> bytes:
    payload = zlib.compress(_ENCODER.encode(entries), 1)
    if public_key is not None:
        payload = sealedbox.seal_to(public_key, payload, place)
    return payload


def _unpack(payload: bytes) -> list[LogEntry]:
    return _ENTRIES.decode(zlib.decompress(payload))
