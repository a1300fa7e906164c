"""Platform snapshots: taken hourly and on demand, stored, listed, checked without a key.

Taking one (`Snapshots.take`, answered at once; the work goes on in the background):

1. `<id>/state.json` is stored (running), so every backup instance lists it and a
   second request is answered with it instead of starting another;
2. for each service of `EXPORTERS`, in order: SNAPSHOT_RELEASE of the new id (nothing to
   forget yet) tells which instances serve it, then SNAPSHOT_EXPORT is gathered from all
   of them; a service nobody serves, an instance that fails or stays silent, fails the
   snapshot with its name. Each instance's pieces are pulled (SNAPSHOT_PIECE_READ),
   checked against the size and SHA-256 it announced, and stored under
   `platform/snapshots/<id>/<part>/`;
3. SNAPSHOT_RELEASE lets every exporter delete its copies;
4. the manifest (libs/snapshot/manifest.py) chains to the last completed snapshot, the
   keyring signs it (SNAPSHOT_MANIFEST_SIGN), and `manifest.sig` then `manifest.json`
   are stored last: a folder without a manifest is never a whole snapshot. A failed
   snapshot's pieces are deleted and its state.json says why.

The storage side (folders, states, listing, keyless checks) is snapshotstore.py. The
taker marks its own interrupted snapshots failed when it starts again. The keyring
refuses to sign a snapshot during which a master-key rotation ran (the keyring's part
could hold keys wrapped by a key its sealed copy is not): the backup service cannot ask
beforehand, so such a snapshot fails at its end.

Scheduled snapshots are taken by one instance only, the backup service of the host named
by SLIPWAY_SNAPSHOT_TAKER: a fixed name needs no election and two instances can never
both take the hourly one; on-demand requests reach any instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time

import msgspec
import structlog

from slipway.contracts import keyring
from slipway.contracts import snapshot as sc
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.libs.errors import InvalidRequest, SlipwayError
from slipway.libs.snapshot import manifest as mf
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.snapshotstore import (
    STATE,
    SnapshotStore,
    completed,
    folder,
    id_time,
    new_id,
    time_after,
)
from slipway.services.backup.storage import ObjectStore
from slipway.services.backup.store import iso

log = structlog.get_logger("slipway.backup.snapshots")

PIECE_NAME = re.compile(r"^\d{3,6}\.age\Z")
HOST_ID = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,62})?\Z")
PING_TIMEOUT = 10.0  # seconds to learn which instances serve an exporter
PING_SETTLE = 0.5  # ... after the last of them answered (an Ok costs nothing to send)
READ_TIMEOUT = 60.0  # one SNAPSHOT_PIECE_READ
STALE_MARGIN = 300.0  # seconds past the export timeout before a silent taker counts as dead

NO_RECIPIENTS = (
    "No recovery recipients are configured: set SLIPWAY_RECOVERY_RECIPIENTS (the age public"
    " key(s) of the operator's offline recovery identity) for the keyring and the backup"
    " service. A snapshot sealed to nobody could never be restored, so none is taken."
)


class Failed(Exception):
    """Why a snapshot failed, in a line an operator can act on."""


def parse_recipients(text: str) -> list[str]:
    """The recovery recipients (`age1...`); InvalidRequest when none, or one is not a key."""
    words = text.replace(",", " ").split()
    if not words:
        raise InvalidRequest(NO_RECIPIENTS)
    for word in words:
        try:
            age.parse_recipient(word)
        except ValueError as exc:
            raise InvalidRequest(f"SLIPWAY_RECOVERY_RECIPIENTS: {exc}") from None
    return words


class Snapshots:
    """One backup instance's side of platform snapshots."""

    def __init__(self, settings: BackupSettings, storage: ObjectStore, bus: Bus) -> None:
        self.settings = settings
        self.storage = storage
        self.bus = bus
        names = settings.snapshot_exporters.replace(",", " ").split()
        self.exporters: tuple[Service, ...] = (
            tuple(Service(n) for n in names) if names else sc.EXPORTERS
        )
        self.store = SnapshotStore(
            storage, settings.host_id, settings.snapshot_export_timeout + STALE_MARGIN
        )
        self.running: sc.SnapshotInfo | None = None
        self._task: asyncio.Task[sc.SnapshotInfo] | None = None
        self._schedule: asyncio.Task[None] | None = None
        self._attempted = 0.0  # time of the last scheduled attempt
        self._failed = False  # it failed: the next one comes sooner
        self._lock = asyncio.Lock()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark this host's interrupted snapshots failed; start the schedule on the taker."""
        try:
            await self._recover()
        except SlipwayError as exc:  # the storage may come back; listing shows them stale
            log.warning("snapshot.recover_failed", error=str(exc))
        if self.settings.snapshot_interval > 0 and self.is_taker:
            self._schedule = asyncio.create_task(self._schedule_loop(), name="snapshot-schedule")

    async def stop(self) -> None:
        for task in (self._schedule, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @property
    def is_taker(self) -> bool:
        return self.settings.snapshot_taker == self.settings.host_id

    async def _recover(self) -> None:
        for record in await self.store.records():
            if record.taker == self.settings.host_id and record.info.state == "running":
                await self._fail(record.info, "interrupted: the backup service stopped")

    async def _schedule_loop(self) -> None:
        # The first look comes one period after the start: the services it exports from
        # are starting too.
        check = min(self.settings.snapshot_interval, self.settings.schedule_check_seconds)
        while True:
            await asyncio.sleep(check)
            try:
                if await self._due(time.time()):
                    self._attempted = time.time()
                    self._failed = (await self.take_and_wait(kind="scheduled")).state != "completed"
            except Exception as exc:  # tried again later; the loop never dies
                self._failed = True
                log.warning("snapshot.scheduled_failed", error=str(exc))

    async def _due(self, now: float) -> bool:
        last = self._attempted
        if not last:
            ids = sorted(r.id for r in await self.store.listing())
            last = id_time(ids[-1]) if ids else 0.0
        wait = self.settings.snapshot_interval
        if self._failed:
            wait = min(wait, self.settings.schedule_retry_seconds)
        return now - last >= wait

    # ---- taking ------------------------------------------------------------------------------

    async def take(
        self, requested_by: str = "", kind: str = "manual"
    ) -> tuple[sc.SnapshotInfo, asyncio.Task[sc.SnapshotInfo] | None]:
        """Start a snapshot; the one already running (here or on another instance) if any."""
        recipients = parse_recipients(self.settings.recovery_recipients)
        async with self._lock:
            if self.running is not None:
                return self.running, self._task
            found = await self.store.listing()
            other = next((i for i in found if i.state == "running"), None)
            if other is not None:
                return other, None
            now = await time_after(max((i.id for i in found), default=""))
            snapshot_id = new_id(now)
            info = sc.SnapshotInfo(
                id=snapshot_id,
                state="running",
                kind="scheduled" if kind == "scheduled" else "manual",
                started_at=iso(now),
                requested_by=requested_by,
                location=self.store.location(snapshot_id),
            )
            await self.store.save(info)
            # Two instances that started at once both see both records: the older id goes on.
            other = await self._running_elsewhere(before=info.id)
            if other is not None:
                await self.store.delete(info.id)
                return other, None
            self.running = info
            self._task = asyncio.create_task(
                self._run(info, recipients), name=f"snapshot:{info.id}"
            )
            return info, self._task

    async def take_and_wait(self, requested_by: str = "", kind: str = "manual") -> sc.SnapshotInfo:
        """Take a snapshot and wait for its end (the schedule, tests)."""
        info, task = await self.take(requested_by, kind)
        if task is None:
            raise InvalidRequest(f"snapshot {info.id} is being taken by another backup instance")
        return await task

    async def _run(self, info: sc.SnapshotInfo, recipients: list[str]) -> sc.SnapshotInfo:
        started = time.monotonic()
        try:
            parts = await self._export_all(info, recipients)
            done = await self._finish(info, recipients, parts)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, Failed | SlipwayError) else repr(exc)
            log.warning("snapshot.failed", snapshot=info.id, error=reason)
            return await self._give_up(info, reason)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._give_up(info, "interrupted: the backup service stopped"))
            raise
        finally:
            self.running = None
        log.info(
            "snapshot.completed",
            snapshot=done.id,
            size=done.size,
            parts=len(done.parts),
            seconds=round(time.monotonic() - started, 3),
        )
        try:
            await self.expire()
        except SlipwayError as exc:  # retried after the next snapshot
            log.warning("snapshot.expiry_failed", error=str(exc))
        return done

    async def _give_up(self, info: sc.SnapshotInfo, reason: str) -> sc.SnapshotInfo:
        await self._release(info.id)
        try:
            return await self._fail(info, reason)
        except SlipwayError as exc:  # the storage failed too: listing shows it stale later
            log.warning("snapshot.cleanup_failed", snapshot=info.id, error=str(exc))
            return msgspec.structs.replace(info, state="failed", error=reason)

    async def _export_all(self, info: sc.SnapshotInfo, recipients: list[str]) -> list[sc.PartInfo]:
        parts: list[sc.PartInfo] = []
        exported: dict[Service, set[str]] = {}
        for service in self.exporters:
            exported[service] = await self._responders(info.id, service)
            parts += await self._export(info.id, service, exported[service], recipients)
            await self.store.save(info)  # still alive: nobody takes it for a dead taker's
        await self._release(info.id, exported)
        return parts

    async def _responders(self, snapshot_id: str, service: Service) -> set[str]:
        # Every instance answers a release, of anything or nothing: who answers, exports.
        found = await self.bus.gather(
            sc.SNAPSHOT_RELEASE[service],
            sc.ReleaseExport(snapshot_id=snapshot_id),
            timeout=PING_TIMEOUT,
            settle=PING_SETTLE,
        )
        return set(found.replies) | set(found.errors)

    async def _export(
        self, snapshot_id: str, service: Service, expect: set[str], recipients: list[str]
    ) -> list[sc.PartInfo]:
        if not expect:
            raise Failed(f"{service} did not answer: is it running? (no snapshot without it)")
        timeout = self.settings.snapshot_export_timeout
        found = await self.bus.gather(
            sc.SNAPSHOT_EXPORT[service],
            sc.ExportState(snapshot_id=snapshot_id, recipients=recipients),
            expect=expect,
            timeout=timeout,
        )
        if found.errors:
            responder, error = min(found.errors.items())
            raise Failed(f"{service} ({responder}) could not export its state: {error}")
        if found.missing:
            raise Failed(
                f"{service} ({', '.join(sorted(found.missing))}) did not export its state"
                f" within {timeout:g} s"
            )
        parts: list[sc.PartInfo] = []
        names: set[str] = set()
        for responder, exported in sorted(found.replies.items()):
            part = _check_exported(snapshot_id, service, exported)
            name = mf.part_name(part.service, part.host_id)
            if name in names:
                raise Failed(f"two instances of {service} exported the same part {name}")
            names.add(name)
            for piece in part.pieces:
                await self._pull(snapshot_id, service, responder, part, piece)
                await self.store.touch(snapshot_id)
            parts.append(part)
        return parts

    async def _pull(
        self,
        snapshot_id: str,
        service: Service,
        responder: str,
        part: sc.PartInfo,
        piece: sc.Piece,
    ) -> None:
        data = bytearray()
        while True:
            found = await self.bus.gather(
                sc.SNAPSHOT_PIECE_READ[service],
                sc.ReadPiece(
                    snapshot_id=snapshot_id,
                    service=service,
                    host_id=part.host_id,
                    piece=piece.name,
                    offset=len(data),
                ),
                expect={responder},
                timeout=READ_TIMEOUT,
            )
            chunk = found.replies.get(responder)
            if chunk is None:
                why = found.errors.get(responder) or "no answer"
                raise Failed(f"reading {mf.piece_path(part, piece)} from {service} failed: {why}")
            data += chunk.data
            if len(data) > piece.size:
                raise Failed(f"{mf.piece_path(part, piece)} is longer than {service} announced")
            if chunk.eof or not chunk.data:
                break
        if len(data) != piece.size or hashlib.sha256(data).hexdigest() != piece.sha256:
            raise Failed(
                f"{mf.piece_path(part, piece)} arrived with another size or SHA-256 than"
                f" {service} announced: it was damaged on the way"
            )
        await self.storage.put(f"{folder(snapshot_id)}/{mf.piece_path(part, piece)}", bytes(data))

    async def _release(
        self, snapshot_id: str, exported: dict[Service, set[str]] | None = None
    ) -> None:
        """Every exporter deletes its copies (those that exported, or all that answer)."""
        for service in self.exporters:
            expect = exported.get(service) if exported is not None else None
            with contextlib.suppress(SlipwayError):
                await self.bus.gather(
                    sc.SNAPSHOT_RELEASE[service],
                    sc.ReleaseExport(snapshot_id=snapshot_id),
                    expect=expect,
                    timeout=PING_TIMEOUT,
                    settle=PING_SETTLE,
                )

    async def _finish(
        self, info: sc.SnapshotInfo, recipients: list[str], parts: list[sc.PartInfo]
    ) -> sc.SnapshotInfo:
        previous, previous_sha = await self._last_completed()
        finished = time.time()
        manifest = mf.Manifest(
            id=info.id,
            kind=info.kind,
            started_at=info.started_at,
            finished_at=iso(finished),
            recipients=[age.fingerprint(age.parse_recipient(r)) for r in recipients],
            parts=parts,
            previous=previous,
            previous_sha256=previous_sha,
            requested_by=info.requested_by,
        )
        body = mf.encode(manifest)
        signed = await self.bus.call(
            sc.SNAPSHOT_MANIFEST_SIGN, sc.SignSnapshotManifest(message=body), timeout=30.0
        )
        signature = msgspec.json.encode(
            mf.Signature(public_key=signed.public_key.hex(), signature=signed.signature.hex())
        )
        try:
            signer = mf.check_signature(body, signature, {signed.public_key.hex()})
        except mf.SnapshotError as exc:
            raise Failed(f"the keyring's signature does not verify: {exc}") from None
        base = folder(info.id)
        await self.storage.put(f"{base}/{mf.SIGNATURE}", signature)
        await self.storage.put(f"{base}/{mf.MANIFEST}", body)  # last: now it is whole
        await self.storage.delete(f"{base}/{STATE}")
        return completed(manifest, signer, info.location)

    async def _fail(self, info: sc.SnapshotInfo, reason: str) -> sc.SnapshotInfo:
        failed = msgspec.structs.replace(
            info, state="failed", finished_at=iso(time.time()), error=reason
        )
        await self.store.drop_pieces(info.id)
        await self.store.save(failed)
        return failed

    async def _running_elsewhere(self, before: str | None = None) -> sc.SnapshotInfo | None:
        for info in await self.store.listing():
            if info.state == "running" and (before is None or info.id < before):
                return info
        return None

    async def _last_completed(self) -> tuple[str, str]:
        whole = [i.id for i in await self.store.listing() if i.state == "completed"]
        if not whole:
            return "", ""
        last = max(whole)
        body = await self.store.manifest_bytes(last)
        return last, hashlib.sha256(body).hexdigest()

    async def expire(self) -> list[str]:
        """Delete completed snapshots beyond the newest `snapshot_keep`, and older failures."""
        found = sorted(await self.store.listing(), key=lambda i: i.id)
        whole = [i.id for i in found if i.state == "completed"]
        keep = max(self.settings.snapshot_keep, 1)
        gone = whole[:-keep] if len(whole) > keep else []
        oldest_kept = whole[-keep] if len(whole) >= keep else ""
        gone += [i.id for i in found if i.state == "failed" and i.id < oldest_kept]
        for snapshot_id in gone:
            await self.store.delete(snapshot_id)
            log.info("snapshot.expired", snapshot=snapshot_id)
        return gone

    # ---- listing and checking ----------------------------------------------------------------

    async def listing(self) -> list[sc.SnapshotInfo]:
        """Every snapshot in the storage, newest first."""
        return await self.store.listing()

    async def verify(self, snapshot_id: str) -> sc.SnapshotCheck:
        """Keyless checks through the storage: the signature by the keyring's key, every piece."""
        problems: list[str] = []
        return await self.store.verify(snapshot_id, await self._signing_key(problems), problems)

    async def _signing_key(self, problems: list[str]) -> set[str] | None:
        try:
            key = await self.bus.call(keyring.AUDIT_KEY, keyring.GetAuditKey(), timeout=10.0)
        except SlipwayError as exc:
            problems.append(
                f"the keyring did not say which key it signs with ({exc}): the signature"
                " was checked, not who made it"
            )
            return None
        return {key.public_key.hex()}


def _check_exported(snapshot_id: str, service: Service, exported: sc.ExportedState) -> sc.PartInfo:
    """The part an instance answered, if it is about this snapshot and named safely."""
    if exported.snapshot_id != snapshot_id or exported.service != service:
        raise Failed(f"{service} answered for another snapshot or service")
    if not HOST_ID.match(exported.host_id):
        raise Failed(f"{service} answered with a host id that is no name: {exported.host_id!r}")
    names = [p.name for p in exported.pieces]
    if len(set(names)) != len(names) or not all(PIECE_NAME.match(n) for n in names):
        raise Failed(f"{service} named its pieces otherwise than NNN.age: {names[:5]}")
    return sc.PartInfo(
        service=exported.service,
        host_id=exported.host_id,
        pieces=exported.pieces,
        plain_bytes=exported.plain_bytes,
        counts=exported.counts,
        left_out=exported.left_out,
        schema=exported.schema,
    )
