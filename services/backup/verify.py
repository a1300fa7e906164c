"""Verified backups: a backup checked without keys, then restored into a throwaway database.

    pg:backups:verify (gateway) or the weekly run -> Verifier.verify
      1. without any decryption key: every manifest from the backup's on is signed by the
         keyring's audit key, the hash chain runs unbroken, every object they name is in
         storage with its SHA-256, and the WAL runs without a hole from the backup's end
         to the newest piece (a hole is named by its range and segment);
      2. the scheduler (DATABASE_VERIFY) makes a throwaway run folder and asks us to stage
         the backup there (RESTORE_STAGE, answered by `stage`, to the backup's end: no WAL
         beyond what base.tar holds); it runs pg_verifybackup on the unpacked base backup
         against the server's own backup_manifest (from the sealed `counts` object), starts
         the database with no network, waits for the end of recovery and counts the rows of
         every table;
      3. the counts must equal those the capture sealed.
    The outcome is recorded on the backup (`verified`, a failure's reason as its error) and
    published as BACKUP_VERIFIED: the gateway audits it and tells the app's logs of a failure.

A team whose backups are sealed to its own keys only gets step 1 alone: the platform
cannot open them, by the team's choice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts import backup as bc
from slipway.contracts import keyring
from slipway.libs import pgwire
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError
from slipway.services.backup import restore as restores
from slipway.services.backup import sealing
from slipway.services.backup.archive import Archive
from slipway.services.backup.errors import Conflict, NoBackup, NotFound, SealedToCustomer
from slipway.services.backup.restore import Plan, Stager
from slipway.services.backup.store import BackupRow, DatabaseRow, backup_info
from slipway.services.backup.walstream import segment_lsn

log = structlog.get_logger("slipway.backup.verify")

DAY = 86400.0
MAX_REPORTED = 5  # problems of one kind named in a reason; the rest are counted
HEADER_PEEK = 16 * 1024


def run_name(addon_id: str, num: int) -> str:
    """The throwaway run folder (and add-on id) a verification of backup `num` uses."""
    return f"verify-{addon_id}-{num}"


@dataclass
class Findings:
    """What step 1 found: problems per check, and what step 2 may rely on."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    base_intact: bool = True
    manifests: int = 0
    objects: int = 0
    wal_end: int = 0

    def add(self, check: str, problem: str) -> None:
        self.problems.setdefault(check, []).append(problem)

    def check(self, name: str, passed_detail: str) -> bc.VerifyCheck:
        found = self.problems.get(name, [])
        if not found:
            return bc.VerifyCheck(name=name, status="passed", detail=passed_detail)
        more = f" (and {len(found) - MAX_REPORTED} more)" if len(found) > MAX_REPORTED else ""
        return bc.VerifyCheck(
            name=name, status="failed", detail="; ".join(found[:MAX_REPORTED]) + more
        )


class Verifier:
    """Verifies the backups of this host's databases, one verification per database at a time."""

    def __init__(self, archive: Archive, stager: Stager) -> None:
        self.archive = archive
        self.catalog = archive.catalog
        self.stager = stager
        self.running: set[str] = set()
        # Throwaway run folders this service is waiting on, with the server's backup_manifest.
        self._staging: dict[str, tuple[DatabaseRow, BackupRow, bytes]] = {}
        self._weekly: asyncio.Task[None] | None = None

    @property
    def bus(self) -> Bus:
        return self.archive.sealer.bus

    # ---- one verification -------------------------------------------------------------------

    async def verify(
        self, db: DatabaseRow, num: int, *, trigger: bc.VerifyTrigger = "manual", actor: str = ""
    ) -> bc.VerifyReport:
        """Verify backup `num` (0: the latest completed) of `db`; record and publish the outcome."""
        backup = (
            await self.catalog.backup(db.addon_id, num)
            if num
            else await self.catalog.latest_completed(db.addon_id)
        )
        if backup is None or backup.state != "completed":
            raise NoBackup(
                f"backup b{num:03d} does not exist or did not complete"
                if num
                else f"{db.addon_name} has no completed backup to verify"
            )
        if db.addon_id in self.running:
            raise Conflict(f"a verification of {db.addon_name} is already running; wait for it")
        self.running.add(db.addon_id)
        try:
            checks = await self._checks(db, backup)
        finally:
            self.running.discard(db.addon_id)
        failed = [c for c in checks if c.status == "failed"]
        result: Literal["passed", "failed"] = "failed" if failed else "passed"
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)[:500]
        await self.catalog.set_verified(db.addon_id, backup.num, result, reason)
        event = bc.BackupVerified(
            addon_id=db.addon_id,
            addon_name=db.addon_name,
            app_id=db.app_id,
            team_id=db.team_id,
            num=backup.num,
            result=result,
            reason=reason,
            trigger=trigger,
            actor=actor,
        )
        await self.bus.publish(bc.BACKUP_VERIFIED, event, retry_for=5.0)
        log.info(
            "backup verified" if not failed else "backup verification FAILED",
            addon=db.addon_name,
            num=backup.num,
            result=result,
            reason=reason,
            trigger=trigger,
        )
        row = await self.catalog.backup(db.addon_id, backup.num)
        assert row is not None
        return bc.VerifyReport(backup=backup_info(row, db), checks=checks)

    async def _checks(self, db: DatabaseRow, backup: BackupRow) -> list[bc.VerifyCheck]:
        found = await self.integrity(db, backup)
        checks = [
            found.check("signatures", f"{found.manifests} manifests signed by the audit key"),
            found.check("chain", "unbroken"),
            found.check("objects", f"{found.objects} objects present, SHA-256 as signed"),
            found.check(
                "wal",
                f"continuous from {pgwire.format_lsn(backup.end_lsn)}"
                f" to {pgwire.format_lsn(max(found.wal_end, backup.end_lsn))}",
            ),
        ]
        if not found.base_intact:
            why = "the backup's own objects failed the checks above"
            return [*checks, *_skipped(why)]
        try:
            sealed = await self._counts(db, backup)
        except SealedToCustomer:
            why = "sealed to the team's own keys only: the platform cannot open it"
            return [*checks, *_skipped(why)]
        return [*checks, *await self._restored(db, backup, sealed)]

    # ---- 1. integrity, without any key ------------------------------------------------------

    async def integrity(self, db: DatabaseRow, backup: BackupRow) -> Findings:
        """Signatures, chain, objects and WAL continuity from `backup` to the newest piece."""
        found = Findings()
        trusted = await self.bus.call(keyring.AUDIT_KEY, keyring.GetAuditKey())
        public = Ed25519PublicKey.from_public_bytes(trusted.public_key)
        base_rows = await self.catalog.base_objects(db.addon_id, backup.num)
        if not any(o.kind == "base" for o in base_rows):
            found.add("objects", f"backup b{backup.num:03d} has no stored parts")
            found.base_intact = False
        first_wal = pgwire.segment_start(backup.end_lsn)
        wal_rows = await self.catalog.wal_objects(db.addon_id, backup.timeline, first_wal)
        needed = [o.key for o in base_rows] + [o.key for o in wal_rows[:1]]
        first_keys = await self.catalog.manifest_range(db.addon_id, needed)
        chain = await self.catalog.manifest_keys(db.addon_id)
        if first_keys:
            start = next(seq for seq, _, key in chain if key == first_keys[0])
        else:
            start = chain[-1][0] + 1 if chain else 1
            found.add("chain", "no manifest names the backup's objects")
            found.base_intact = False
        previous = {seq: digest for seq, digest, _ in chain}
        named: dict[str, dict[str, Any]] = {}
        named_in: dict[str, int] = {}
        last_expiry = 0
        expected_seq = start
        for seq, digest, key in (c for c in chain if c[0] >= start):
            if seq != expected_seq:
                found.add("chain", f"manifests {expected_seq} to {seq - 1} are missing")
            expected_seq = seq + 1
            manifest = await self._manifest(db, seq, digest, key, public, trusted.key_id, found)
            if manifest is None:
                continue
            found.manifests += 1
            prev = previous.get(seq - 1)
            if prev is not None and manifest.get("prev") != prev:
                found.add("chain", f"manifest {seq} does not follow manifest {seq - 1} (prev)")
            if manifest.get("kind") == "expiry":
                last_expiry = seq
            for item in manifest.get("objects") or []:
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    named[item["key"]] = item
                    named_in[item["key"]] = seq
        # Objects expiry removed since (retention.py: a later `expiry` manifest says so, and
        # the catalog no longer lists them) are not missing.
        listed = await self.catalog.visible_keys()
        for key in [k for k in named if k not in listed and named_in[k] < last_expiry]:
            del named[key]
        own = {o.key for o in base_rows}
        for key in own - named.keys():
            found.add("objects", f"{key} is named by no signed manifest")
            found.base_intact = False
        broken: set[str] = set()
        for key, item in sorted(named.items()):
            problem = await self._object_problem(key, str(item.get("sha256") or ""))
            found.objects += 1
            if problem:
                found.add("objects", problem)
                broken.add(key)
                if key in own:
                    found.base_intact = False
        found.wal_end = _wal_holes(found, named, broken, backup)
        return found

    async def _manifest(
        self,
        db: DatabaseRow,
        seq: int,
        digest: str,
        key: str,
        public: Ed25519PublicKey,
        key_id: str,
        found: Findings,
    ) -> dict[str, Any] | None:
        """Manifest `seq`, if it is there, signed by the audit key and the one recorded."""
        try:
            body = json.loads(await self.archive.storage.read(key))
            manifest = body["manifest"]
            signature = base64.b64decode(body["signature"], validate=True)
        except SlipwayError:
            found.add("chain", f"manifest {seq} ({key}) is missing from storage")
            return None
        except (ValueError, KeyError, TypeError, binascii.Error):
            found.add("signatures", f"manifest {seq} ({key}) is not a signed manifest")
            return None
        if not isinstance(manifest, dict):
            found.add("signatures", f"manifest {seq} ({key}) is not a signed manifest")
            return None
        canonical = sealing.canonical(manifest)
        message = keyring.MANIFEST_PREFIX + db.team_id.encode() + b"\n" + canonical
        try:
            public.verify(signature, message)
        except InvalidSignature:
            signer = str(body.get("key_id"))[:40]
            why = "another key" if signer != key_id else "the audit key, but does not match"
            found.add("signatures", f"manifest {seq} ({key}) is signed by {why}")
            return None
        if (manifest.get("addon_id"), manifest.get("seq")) != (db.addon_id, seq):
            found.add("chain", f"manifest {seq} ({key}) belongs elsewhere in the chain")
        if hashlib.sha256(canonical).hexdigest() != digest:
            found.add("chain", f"manifest {seq} ({key}) is not the one recorded")
        return manifest

    async def _object_problem(self, key: str, sha256: str) -> str:
        try:
            stored = await self.archive.storage.read(key)
        except SlipwayError:
            return f"{key} is missing from storage"
        if hashlib.sha256(stored).hexdigest() != sha256:
            return f"{key} does not match its manifest (SHA-256 differs)"
        return ""

    # ---- 2. the throwaway database ----------------------------------------------------------

    async def _counts(self, db: DatabaseRow, backup: BackupRow) -> dict[str, Any]:
        """The backup's sealed `counts` object, opened: {"tables": ..., "backup_manifest": ...}."""
        rows = await self.catalog.base_objects(db.addon_id, backup.num)
        counts = next((o for o in rows if o.kind == "counts"), None)
        if counts is None:
            return {}
        sealed = await self.archive.storage.read(counts.key)
        (opened,) = await sealing.open_many(self.archive.sealer, db.team_id, [sealed])
        try:
            found = json.loads(zstandard.ZstdDecompressor().decompress(opened))
        except (ValueError, zstandard.ZstdError):
            return {}
        return found if isinstance(found, dict) else {}

    async def _restored(
        self, db: DatabaseRow, backup: BackupRow, counts: dict[str, Any]
    ) -> list[bc.VerifyCheck]:
        name = run_name(db.addon_id, backup.num)
        manifest = str(counts.get("backup_manifest") or "").encode()
        self._staging[name] = (db, backup, manifest)
        request = bc.VerifyDatabase(
            source_addon_id=db.addon_id,
            app_id=db.app_id,
            team_id=db.team_id,
            host_id=self.archive.settings.host_id,
            num=backup.num,
            plan=db.plan,
            database=db.database,
            timeout=self.archive.settings.verify_timeout,
        )
        try:
            checked = await self.bus.call(
                bc.DATABASE_VERIFY, request, timeout=self.archive.settings.verify_timeout + 120
            )
        except SlipwayError as exc:
            return _skipped(f"the throwaway database could not be made: {exc.message}", "failed")
        finally:
            self._staging.pop(name, None)
        return compare(checked, counts.get("tables"), bool(manifest))

    def stages(self, req: bc.StageRestore) -> bool:
        """Whether a RESTORE_STAGE is for one of this service's throwaway databases."""
        return req.target_addon_id in self._staging

    async def stage(self, req: bc.StageRestore) -> bc.RestoreStaged:
        """Stage the backup to its end only (no WAL after it), with the server's manifest."""
        db, backup, manifest = self._staging[req.target_addon_id]
        if (req.source_addon_id, req.app_id, req.num) != (db.addon_id, db.app_id, backup.num):
            raise NotFound("no such verification is waiting")
        objects = await self.catalog.base_objects(db.addon_id, backup.num)
        chosen = Plan(
            backup=backup,
            base=sorted((o for o in objects if o.kind == "base"), key=lambda o: o.part),
            counts=None,
            wal=[],
            target=None,
            end_lsn=backup.end_lsn,
        )
        run = bc.addon_run_dir(self.archive.settings.run_root(), req.host_id, req.target_addon_id)
        if not run.is_dir() or run.is_symlink():
            raise NotFound(f"the throwaway run folder {run.name} is not there")
        # Written like a restore's (restore.py's own steps): the container unpacks it alike.
        folder = await asyncio.to_thread(restores._fresh_folder, run, "restore")
        try:
            await self.stager._base(db.team_id, chosen, folder)
            await self.stager._wal(db.team_id, chosen, folder)
            if manifest:
                await asyncio.to_thread(restores._write_at, folder, "backup_manifest", manifest)
            await asyncio.to_thread(restores._write_at, folder, "target", b"\n")
            await asyncio.to_thread(restores._write_at, folder, "READY", b"")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return bc.RestoreStaged(backup_num=backup.num, end_lsn=pgwire.format_lsn(backup.end_lsn))

    # ---- the weekly run ---------------------------------------------------------------------

    def start_due(self) -> None:
        """Verify, one after the other in the background, each database whose turn has come."""
        if self._weekly is not None and not self._weekly.done():
            return
        self._weekly = asyncio.create_task(self._due(), name="backup-verify")

    async def stop(self) -> None:
        if self._weekly is not None:
            self._weekly.cancel()
            await asyncio.gather(self._weekly, return_exceptions=True)

    async def _due(self) -> None:
        settings = self.archive.settings
        every = settings.verify_days * DAY
        for db in await self.catalog.databases(host_id=settings.host_id, state="provisioned"):
            latest = await self.catalog.latest_completed(db.addon_id)
            if latest is None or db.addon_id in self.running:
                continue
            # A new database gets its first verification one period after it appeared.
            since = await self.catalog.last_verified_at(db.addon_id) or await self._seen(db)
            if time.time() - since < every:
                continue
            try:
                await self.verify(db, latest.num, trigger="scheduled")
            except Exception as exc:  # one database's trouble must not stop the others'
                log.warning("scheduled verification failed", addon=db.addon_name, error=str(exc))

    async def _seen(self, db: DatabaseRow) -> float:
        row = await self.catalog.db.fetchone(
            "SELECT created_at FROM databases WHERE addon_id=?", (db.addon_id,)
        )
        return float(row[0]) if row else time.time()


def compare(
    checked: bc.DatabaseChecked, tables: object, had_manifest: bool
) -> list[bc.VerifyCheck]:
    """The throwaway database's checks: pg_verifybackup, recovery, and rows against `tables`."""
    if checked.verifybackup == "skipped" and had_manifest and checked.started:
        verifybackup = bc.VerifyCheck(
            name="pg_verifybackup", status="failed", detail="it did not run"
        )
    elif checked.verifybackup == "skipped":
        verifybackup = bc.VerifyCheck(
            name="pg_verifybackup",
            status="skipped",
            detail="the backup holds no server manifest" if not had_manifest else "",
        )
    else:
        verifybackup = bc.VerifyCheck(
            name="pg_verifybackup",
            status=checked.verifybackup,
            detail=_last_lines(checked.verifybackup_output),
        )
    if not checked.started:
        recovery = bc.VerifyCheck(name="recovery", status="failed", detail=checked.error[:300])
        rows = bc.VerifyCheck(name="row_counts", status="skipped", detail="no database to count")
        return [verifybackup, recovery, rows]
    recovery = bc.VerifyCheck(
        name="recovery", status="passed", detail="started, consistent, promoted"
    )
    return [verifybackup, recovery, row_counts(tables, checked.tables)]


def row_counts(expected: object, found: dict[str, int]) -> bc.VerifyCheck:
    """Rows of every table as restored against those the capture sealed."""
    if not isinstance(expected, dict):
        return bc.VerifyCheck(
            name="row_counts", status="failed", detail="the backup's sealed counts are unreadable"
        )
    wanted = {str(k): int(v) for k, v in expected.items() if isinstance(v, int)}
    problems = []
    for table in sorted(wanted.keys() | found.keys()):
        have, want = found.get(table), wanted.get(table)
        if have != want:
            problems.append(
                f"{table}: {'no table' if have is None else have} restored,"
                f" {'no table' if want is None else want} at capture"
            )
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        detail = "; ".join(problems[:MAX_REPORTED]) + more
        return bc.VerifyCheck(name="row_counts", status="failed", detail=detail)
    return bc.VerifyCheck(
        name="row_counts", status="passed", detail=f"{len(wanted)} tables as captured"
    )


def _wal_holes(
    found: Findings, named: dict[str, dict[str, Any]], broken: set[str], backup: BackupRow
) -> int:
    """Name every hole in the WAL from the backup's end on; the end of what is covered."""
    pieces: list[tuple[int, int]] = []
    for key, item in named.items():
        segment = str(item.get("segment") or "")
        if item.get("kind") != "wal" or key in broken or len(segment) != 24:
            continue
        try:
            timeline, first = segment_lsn(segment)
        except ValueError:
            continue
        if timeline != backup.timeline:
            continue
        start = first + int(item.get("offset") or 0)
        pieces.append((start, start + int(item.get("length") or 0)))
    covered = backup.end_lsn
    for start, end in sorted(pieces):
        if end <= covered:
            continue
        if start > covered:
            found.add(
                "wal",
                f"WAL from {pgwire.format_lsn(covered)} to {pgwire.format_lsn(start)} is missing"
                f" (segment {pgwire.segment_name(backup.timeline, covered)})",
            )
        covered = end
    return covered


def _skipped(why: str, status: bc.CheckStatus = "skipped") -> list[bc.VerifyCheck]:
    return [
        bc.VerifyCheck(name="pg_verifybackup", status="skipped", detail=why),
        bc.VerifyCheck(name="recovery", status=status, detail=why),
        bc.VerifyCheck(name="row_counts", status="skipped", detail=why),
    ]


def _last_lines(text: str, lines: int = 3) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:])[:400]
