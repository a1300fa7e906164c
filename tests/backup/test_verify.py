"""Verified backups: integrity without keys, a throwaway restore, row counts, and the alerts.

Real PostgreSQL containers on the real Docker engine: the scheduler runs the throwaway
database (services/scheduler/verifydb.py), the backup service stages and compares
(services/backup/verify.py), the gateway audits every outcome
(services/gateway/addons/backupverify.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
import pytest

from slipway.cli.commands.pgverify import backup_and_addon
from slipway.contracts import backup as bc
from slipway.contracts.addons import LABEL_ADDON, AddonDesired
from slipway.contracts.logs import LogLines, lines_subject
from slipway.services.backup.app import BACKUPS
from slipway.services.backup.verify import compare, row_counts, run_name
from slipway.services.scheduler.verifydb import parse_counts, throwaway_config
from tests.addons.test_postgresql import provisioned
from tests.backup.conftest import BackupStack
from tests.backup.test_backups import now_iso, sql, streamed_past
from tests.cli.test_pg import _env, slipway
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack, tamper

T = TypeVar("T")


def integration(test: T) -> T:
    """Real NATS, Docker and PostgreSQL: slow."""
    for mark in (pytest.mark.docker, pytest.mark.integration, pytest.mark.slow):
        test = cast(T, mark(test))
    return test


def checks_of(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in found["checks"]}


async def verify(owner: Api, app: str, addon: str, backup: str = "b001") -> dict[str, Any]:
    path = f"/apps/{app}/addons/{addon}/backups/{backup}/actions/verify"
    found: dict[str, Any] = await owner.ok("POST", path)
    return found


async def audited(owner: Api, app: str, **details: str) -> dict[str, Any]:
    """Wait for the app's `backup.verify` audit entry whose details include `details`."""

    async def entry() -> dict[str, Any]:
        log = await owner.ok("GET", f"/apps/{app}/audit")
        for item in log["entries"]:
            if item["action"] == "backup.verify" and details.items() <= item["details"].items():
                return dict(item)
        raise AssertionError(f"no backup.verify entry with {details}: {log['entries']}")

    return await assert_eventually(entry, timeout=30, interval=0.3)


@asynccontextmanager
async def app_log_lines(stack: Stack, app_id: str) -> AsyncIterator[list[str]]:
    """The non-dyno lines sent to the app's logs (what log-shipper stores) while inside."""
    seen: list[str] = []

    async def got(msg: Any) -> None:
        for line in msgspec.json.decode(msg.data, type=LogLines).lines:
            seen.append(f"{line.source}[{line.dyno}]: {line.text}")

    subscription = await stack.bus.nc.subscribe(lines_subject(app_id), cb=got)
    await stack.bus.nc.flush()
    try:
        yield seen
    finally:
        await subscription.unsubscribe()


async def captured(backup_stack: BackupStack, name: str) -> tuple[Api, dict[str, Any], str]:
    """An app with a database holding two tables of rows, and its first backup."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, name)
    addon = await provisioned(alice, name)
    await sql(
        backup_stack.addons,
        alice,
        app,
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 250);"
        " CREATE TABLE \"Odd name\" (v text); INSERT INTO \"Odd name\" VALUES ('a'), ('b')",
    )
    backup = await alice.ok("POST", f"/apps/{name}/addons/{addon['name']}/backups", status=201)
    assert backup["state"] == "completed", backup
    return alice, app, addon["name"]


@integration
async def test_a_good_backup_passes_weekly_and_on_demand_and_the_audit_log_shows_it(
    backup_stack: BackupStack, tmp_path: Path
) -> None:
    """The weekly run and pg:backups:verify both pass a good backup; each outcome is audited."""
    alice, _, addon = await captured(backup_stack, "good")
    service = backup_stack.backup[BACKUPS]
    # A database seen more than SLIPWAY_VERIFY_DAYS ago and never verified is due.
    await tamper(
        backup_stack.settings.db_path(),
        "UPDATE databases SET created_at = ?",
        (time.time() - 8 * 86400,),
    )
    service.verifier.start_due()
    weekly = await audited(alice, "good", result="passed", trigger="scheduled")
    assert weekly["actor"] == "service:backup"

    env = _env(backup_stack.addons.stack, alice.token, "good")
    shown = await asyncio.to_thread(slipway, env, tmp_path, "pg:backups:verify", "--json")
    assert shown.code == 0, shown.err
    found = json.loads(shown.out)
    checks = checks_of(found)
    assert found["verified"] == "passed", found
    assert {c["status"] for c in checks.values()} == {"passed"}, checks
    assert set(checks) == {
        "signatures", "chain", "objects", "wal", "pg_verifybackup", "recovery", "row_counts",
    }  # fmt: skip
    assert "2 tables" in checks["row_counts"]["detail"]
    assert "successfully verified" in checks["pg_verifybackup"]["detail"]
    listed = await alice.ok("GET", f"/apps/good/addons/{addon}/backups")
    assert listed[0]["verified"] == "passed"
    entry = await audited(alice, "good", result="passed", trigger="manual")
    assert entry["actor"] == "alice@example.com"
    assert entry["details"]["backup"] == "b001"
    # Nothing of the throwaway database is left: container, volume, run folder.
    addon_id = (await alice.ok("GET", f"/apps/good/addons/{addon}"))["id"]
    label = f"{LABEL_ADDON}={run_name(addon_id, 1)}"
    for kind in ("container", "volume"):
        listed = await asyncio.to_thread(
            subprocess.run,
            ["docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []),
             "--filter", f"label={label}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        left = listed.stdout
        assert left.strip() == "", (kind, left)
    run_root = backup_stack.settings.run_root()
    assert not list(run_root.glob("*/verify-*")), list(run_root.glob("*/*"))


@integration
async def test_a_removed_wal_piece_is_a_gap_shown_failed_and_told_to_the_apps_logs(
    backup_stack: BackupStack, tmp_path: Path
) -> None:
    """A WAL piece gone from storage: verify names the gap; pg:backups and the logs say so."""
    alice, app, addon = await captured(backup_stack, "hole")
    for n in range(3):  # pieces after the backup's end
        await sql(backup_stack.addons, alice, app, f"INSERT INTO t VALUES ({n})")  # noqa: S608
        await streamed_past(alice, "hole", addon, now_iso())
    listed = await alice.ok("GET", f"/apps/hole/addons/{addon}/backups/b001/objects")
    wal = [o for o in listed if o["kind"] == "wal"]
    assert len(wal) >= 3, listed
    victim = wal[-2]
    (backup_stack.storage / victim["key"]).unlink()

    async with app_log_lines(backup_stack.addons.stack, app["id"]) as lines:
        found = await verify(alice, "hole", addon)
        checks = checks_of(found)
        assert found["verified"] == "failed", found
        assert checks["wal"]["status"] == "failed", checks
        assert "is missing" in checks["wal"]["detail"]
        assert victim["segment"] in checks["wal"]["detail"]
        assert victim["key"] in checks["objects"]["detail"]
        # The backup itself still restores to its end: the gap is in what follows it.
        assert checks["recovery"]["status"] == "passed", checks

        backups = await alice.ok("GET", f"/apps/hole/addons/{addon}/backups")
        assert backups[0]["verified"] == "failed"
        assert victim["segment"] in backups[0]["error"]

        env = _env(backup_stack.addons.stack, alice.token, "hole")
        shown = await asyncio.to_thread(slipway, env, tmp_path, "pg:backups")
        assert "Completed (verification FAILED)" in shown.out, shown.out
        again = await asyncio.to_thread(slipway, env, tmp_path, "pg:backups:verify", "b001", addon)
        assert again.code == 1, again.out
        assert "Result: FAILED" in again.out
        assert "failed verification" in again.err

        async def alerted() -> None:
            assert any(
                line.startswith("heroku[backup]: Error: backup b001") and victim["segment"] in line
                for line in lines
            ), lines

        await assert_eventually(alerted, timeout=30, interval=0.3)
    await audited(alice, "hole", result="failed")


@integration
async def test_a_flipped_byte_in_a_stored_object_fails_naming_it(
    backup_stack: BackupStack,
) -> None:
    """A changed byte in a base part: verify fails, names the object, restores nothing."""
    alice, _, addon = await captured(backup_stack, "flipv")
    addon_id = (await alice.ok("GET", f"/apps/flipv/addons/{addon}"))["id"]
    part = backup_stack.storage / addon_id / "base" / "000001" / "00000"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))

    found = await verify(alice, "flipv", addon)
    checks = checks_of(found)
    assert found["verified"] == "failed", found
    assert checks["objects"]["status"] == "failed"
    assert f"{addon_id}/base/000001/00000 does not match" in checks["objects"]["detail"]
    assert checks["recovery"]["status"] == "skipped"
    listed = await alice.ok("GET", f"/apps/flipv/addons/{addon}/backups")
    assert listed[0]["verified"] == "failed"


@integration
async def test_a_rewritten_manifest_fails_its_signature(backup_stack: BackupStack) -> None:
    """A manifest changed in storage (one field of it) no longer carries its signature."""
    alice, _, addon = await captured(backup_stack, "forged")
    addon_id = (await alice.ok("GET", f"/apps/forged/addons/{addon}"))["id"]
    manifests = sorted((backup_stack.storage / addon_id / "manifests").iterdir())
    base = next(p for p in manifests if b'"kind":"base"' in p.read_bytes().replace(b" ", b""))
    body = msgspec.json.decode(base.read_bytes())
    body["manifest"]["size_bytes"] += 1
    base.write_bytes(msgspec.json.encode(body))

    found = await verify(alice, "forged", addon)
    checks = checks_of(found)
    assert found["verified"] == "failed", found
    assert checks["signatures"]["status"] == "failed", checks
    assert f"{addon_id}/manifests/" in checks["signatures"]["detail"]


def forged_manifest(text: str) -> str:
    """The server's backup_manifest claiming another size for PG_VERSION, checksum redone."""
    changed, count = re.subn(r'("Path": "PG_VERSION", "Size": )(\d+)', r"\g<1>99", text)
    assert count == 1, text[:300]
    head = changed[: changed.index('"Manifest-Checksum"')]
    digest = hashlib.sha256(head.encode()).hexdigest()
    return re.sub(r'("Manifest-Checksum": ")[0-9a-f]+', rf"\g<1>{digest}", changed)


@integration
async def test_counts_and_server_manifest_that_differ_from_the_restore_fail(
    backup_stack: BackupStack,
) -> None:
    """What the capture sealed disagrees with the restored files and rows: both checks fail."""
    alice, _, addon = await captured(backup_stack, "counts")
    verifier = backup_stack.backup[BACKUPS].verifier
    opened = verifier._counts

    # The sealed counts object cannot be re-sealed without the team's key: its opened
    # content is changed on its way in, as a forged object that opened would be.
    async def forged(db: Any, backup: Any) -> dict[str, Any]:
        found = await opened(db, backup)
        found["tables"]["public.t"] += 1
        found["backup_manifest"] = forged_manifest(found["backup_manifest"])
        return found

    verifier._counts = forged  # type: ignore[method-assign]
    found = await verify(alice, "counts", addon)
    checks = checks_of(found)
    assert found["verified"] == "failed", found
    assert checks["row_counts"]["status"] == "failed", checks
    assert checks["row_counts"]["detail"] == "public.t: 250 restored, 251 at capture"
    assert checks["pg_verifybackup"]["status"] == "failed", checks
    assert "PG_VERSION" in checks["pg_verifybackup"]["detail"]
    assert checks["recovery"]["status"] == "passed"


# ---- the comparison, without servers -------------------------------------------------------


def test_a_row_count_that_differs_fails_naming_the_table() -> None:
    """Counts restored against counts captured: a difference names table, restored and captured."""
    found = row_counts({"public.t": 250, "public.u": 3}, {"public.t": 249, "public.u": 3})
    assert found.status == "failed"
    assert found.detail == "public.t: 249 restored, 250 at capture"
    missing = row_counts({"public.t": 1}, {})
    assert missing.status == "failed"
    assert "public.t: no table restored" in missing.detail
    assert row_counts({"public.t": 1}, {"public.t": 1}).status == "passed"


def test_a_database_that_did_not_recover_fails() -> None:
    """No started database: recovery fails with the scheduler's reason; counts are skipped."""
    checks = compare(
        bc.DatabaseChecked(started=False, error="the database stopped (exit code 1)"),
        {"public.t": 1},
        had_manifest=True,
    )
    by_name = {c.name: c for c in checks}
    assert by_name["recovery"].status == "failed"
    assert "exit code 1" in by_name["recovery"].detail
    assert by_name["row_counts"].status == "skipped"


def test_the_cli_takes_backup_and_database_in_either_form() -> None:
    """`pg:backups:verify [BACKUP] [ADDON]`: a lone name that is no backup id is the database."""
    assert backup_and_addon(None, None) == ("latest", None)
    assert backup_and_addon("b003", None) == ("b003", None)
    assert backup_and_addon("postgresql-amber-1", None) == ("latest", "postgresql-amber-1")
    assert backup_and_addon("b002", "postgresql-amber-1") == ("b002", "postgresql-amber-1")


def test_the_throwaway_database_has_no_network_and_no_restart() -> None:
    """The add-on's hardened container, cut off from every network, pg_verifybackup first."""
    want = AddonDesired(
        addon_id="verify-a-1", addon_name="verify-a-1", app_id="app", app_name="verify",
        team_id="team", plan="postgresql:mini", database="db", user="db",
    )  # fmt: skip
    config = throwaway_config(want, "vol", {}, Path("/run/x"), 0)
    host = config["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert "NetworkingConfig" not in config
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    assert config["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "pg_verifybackup" in config["Entrypoint"][2]


def test_psql_counts_are_read_whatever_the_table_names() -> None:
    """Unit and record separators keep names with spaces, dots and tabs whole."""
    output = "public.t\x1f250\x1epublic.Odd name\x1f2\x1epublic.a\tb\x1f0\n"
    assert parse_counts(output) == {"public.t": 250, "public.Odd name": 2, "public.a\tb": 0}
