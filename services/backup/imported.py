"""A catalog rebuilt from storage: the history of a database whose host is gone.

Each host's backup service keeps its own catalog, so when a host stops answering, its
databases' backups are known only to the shared storage (a folder every host reaches,
or the S3 bucket). Everything a restore needs is in the signed manifests there
(`<addon_id>/manifests/<seq>`, services/backup/archive.py): the base backups, their
objects with their SHA-256, the WAL pieces, and what expiry removed.

`Importer.bring_up_to_date` reads the manifests this catalog does not have yet (all of
them the first time), and before it records anything checks that each one is signed by
the keyring's audit key for the team it names, follows the previous one (`prev`), has
the sequence number of its name and belongs to the database asked for: one that does
not is named and the import refused. Then the database's row (team from the manifests,
app from the request), its backups, objects and WAL position are recorded as imported:
read-only here, never streamed or expired by this host (it does not run the database).
The restore then plans and stages as usual, and checks every object's SHA-256 against
the signed manifests as it reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts import keyring
from slipway.libs import pgwire
from slipway.libs.errors import SlipwayError
from slipway.services.backup import sealing
from slipway.services.backup.archive import Archive
from slipway.services.backup.errors import IntegrityError, NotFound
from slipway.services.backup.store import BackupRow, DatabaseRow, ImportedHistory, ObjectRow
from slipway.services.backup.walstream import segment_lsn

log = structlog.get_logger("slipway.backup.imported")


class Importer:
    """Imports databases' histories from the shared storage's signed manifests."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.catalog = archive.catalog

    async def bring_up_to_date(self, addon_id: str, app_id: str) -> DatabaseRow:
        """The row of `addon_id` (of `app_id`) with every manifest in storage imported.

        IntegrityError names the first manifest that is not signed, out of the chain, or
        about another database; NotFound when storage has nothing of it.
        """
        known = await self.catalog.database(addon_id)
        if known is not None and known.app_id != app_id:
            raise NotFound(f"no backups of add-on {addon_id} in this app")
        async with self.archive.lock(addon_id):
            found = await self._read(addon_id, app_id, known)
            if found is None:
                if known is None:
                    raise NotFound(f"no backups of add-on {addon_id} in storage")
                return known
            await self.catalog.record_import(found)
        log.info(
            "history imported from storage",
            addon=addon_id,
            manifests=len(found.manifests),
            backups=[b.num for b in found.backups],
            wal_lsn=pgwire.format_lsn(found.wal[1]) if found.wal else "",
        )
        row = await self.catalog.database(addon_id)
        assert row is not None
        return row

    async def _read(
        self, addon_id: str, app_id: str, known: DatabaseRow | None
    ) -> ImportedHistory | None:
        """What the manifests this catalog lacks say, every one checked; None if none."""
        seq, prev = await self.catalog.next_manifest(addon_id)
        names = await self.archive.storage.keys(f"{addon_id}/manifests")
        waiting: dict[int, str] = {}
        for key in names:
            tail = key.rsplit("/", 1)[-1]
            if not tail.isdigit() or key != f"{addon_id}/manifests/{tail}":
                raise IntegrityError(f"{key} is not a manifest's name: the import is refused")
            if int(tail) >= seq:
                waiting[int(tail)] = key
        if not waiting:
            return None
        trusted = await self.archive.sealer.bus.call(keyring.AUDIT_KEY, keyring.GetAuditKey())
        public = Ed25519PublicKey.from_public_bytes(trusted.public_key)
        team = known.team_id if known is not None else ""
        history: ImportedHistory | None = None
        for number in sorted(waiting):
            key = waiting[number]
            if number != seq:
                raise IntegrityError(
                    f"manifest {seq} of {addon_id} is missing from storage (the next is {key}):"
                    " the import is refused"
                )
            manifest, created = await self._checked(key, addon_id, seq, prev, team, public)
            team = str(manifest["team_id"])
            if history is None:
                db = known or DatabaseRow(
                    addon_id=addon_id,
                    addon_name=addon_id,
                    app_id=app_id,
                    team_id=team,
                    plan="",
                    database="",
                    host_id="",
                    state="imported",
                )
                history = ImportedHistory(db=db)
            prev = hashlib.sha256(sealing.canonical(manifest)).hexdigest()
            history.manifests.append((seq, prev, key, created))
            _apply(history, manifest, seq, created)
            seq += 1
        return history

    async def _checked(
        self,
        key: str,
        addon_id: str,
        seq: int,
        prev: str,
        team: str,
        public: Ed25519PublicKey,
    ) -> tuple[dict[str, Any], float]:
        """Manifest `key`, signed, in its place in the chain; IntegrityError names it."""

        def refuse(why: str) -> IntegrityError:
            return IntegrityError(f"manifest {key} {why}: the import is refused")

        try:
            body = json.loads(await self.archive.storage.read(key))
            manifest = body["manifest"]
            signature = base64.b64decode(body["signature"], validate=True)
        except SlipwayError as exc:
            raise refuse(f"cannot be read ({exc.message})") from None
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise refuse("is not a signed manifest") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("team_id"), str):
            raise refuse("is not a signed manifest")
        canonical = sealing.canonical(manifest)
        message = keyring.MANIFEST_PREFIX + manifest["team_id"].encode() + b"\n" + canonical
        try:
            public.verify(signature, message)
        except InvalidSignature:
            raise refuse("is not signed by the keyring's audit key") from None
        if manifest.get("format") != sealing.MANIFEST_FORMAT:
            raise refuse("has an unknown format")
        if manifest.get("addon_id") != addon_id or manifest.get("seq") != seq:
            raise refuse("belongs elsewhere (another database, or another place in the chain)")
        if manifest.get("prev") != prev:
            raise refuse(f"does not follow manifest {seq - 1} (prev)")
        if team and manifest["team_id"] != team:
            raise refuse("is another team's")
        created = manifest.get("created_at")
        if not isinstance(created, int | float):
            raise refuse("has no creation time")
        return manifest, float(created)


def _apply(history: ImportedHistory, manifest: dict[str, Any], seq: int, created: float) -> None:
    """Add what one checked manifest says to `history`."""
    addon_id = history.db.addon_id
    kind = manifest.get("kind")
    if kind == "expiry":
        history.removed.extend(str(k) for k in manifest.get("removed") or [])
        history.expired_backups.extend(int(n) for n in manifest.get("expired_backups") or [])
        for item in manifest.get("wal_removed") or []:
            through = pgwire.parse_lsn(str(item["through_lsn"]))
            history.wal_removed.append((int(item["timeline"]), through))
        return
    timeline = int(manifest.get("timeline") or 0)
    objects = []
    for item in manifest.get("objects") or []:
        start = end = 0
        if item.get("kind") == "wal":
            _, first = segment_lsn(str(item["segment"]))
            start = first + int(item.get("offset") or 0)
            end = start + int(item.get("length") or 0)
        objects.append(
            ObjectRow(
                key=str(item["key"]),
                addon_id=addon_id,
                kind=str(item["kind"]),
                backup_num=int(item.get("backup_num") or 0),
                part=int(item.get("part") or 0),
                timeline=timeline,
                segment=str(item.get("segment") or ""),
                offset=int(item.get("offset") or 0),
                length=int(item.get("length") or 0),
                start_lsn=start,
                end_lsn=end,
                size=int(item["size"]),
                sha256=str(item["sha256"]),
                created_at=created,
            )
        )
    history.objects.extend((o, seq) for o in objects)
    if kind == "base":
        history.backups.append(
            BackupRow(
                addon_id=addon_id,
                num=int(manifest["backup_num"]),
                kind="manual",  # the manifest does not say why it was taken
                state="completed",
                started_at=created,
                finished_at=created,
                size_bytes=int(manifest.get("size_bytes") or 0),
                stored_bytes=sum(o.size for o in objects),
                start_lsn=pgwire.parse_lsn(str(manifest["start_lsn"])),
                end_lsn=pgwire.parse_lsn(str(manifest["end_lsn"])),
                timeline=timeline,
                recipients=[str(r) for r in manifest.get("recipients") or []],
                error="",
                verified="",
            )
        )
    elif kind == "wal" and objects:
        last = max(o.end_lsn for o in objects)
        if history.wal is None or (timeline, last) >= history.wal[:2]:
            history.wal = (timeline, last, created)
