"""The backup service's door into a database the scheduler runs, and restores from a staged backup.

The scheduler gives each database its run folder (mounted at /run/slipway): a second socket
there, reachable by the backup user's group only, trusts the `slipway_backup` role; TCP
always wants a password. A restore is staged into `restore/` by the backup service
(RESTORE_STAGE, answered here by the test with a backup it took itself through
libs/pgwire.py) before the new database's container first starts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import msgspec
import pytest
from nats.aio.msg import Msg

from slipway.contracts import addons as ac
from slipway.contracts import backup as bk
from slipway.contracts import gateway as gw
from slipway.contracts.scope import Scope
from slipway.libs import pgwire
from slipway.libs.errors import NotFound
from slipway.services.gateway.addons import addonstore
from slipway.services.gateway.addons.addons import desired
from slipway.services.scheduler.addons import run_psql
from slipway.services.scheduler.app import SCHEDULER
from tests.addons.conftest import AddonStack, running_scheduler
from tests.addons.test_postgresql import database_container, provisioned, psql
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack

pytestmark = [pytest.mark.docker, pytest.mark.integration]

RESTORE_TIMEOUT = 120.0
# What the backup service does first, run as another OS user: identify the database.
PROBE = """
import asyncio, sys
from slipway.libs import pgwire

async def main() -> None:
    async with await pgwire.connect(sys.argv[1], user="slipway_backup", replication=True) as c:
        print((await c.identify_system()).timeline)

asyncio.run(main())
"""
NOBODY = 65534  # Debian's `nobody` and `nogroup`
STRANGER = 54321  # a uid and gid nobody on this machine has


def run_dir(addon_stack: AddonStack, addon_id: str, host_id: str = "local") -> Path:
    """The add-on's host run folder, where the scheduler of the test puts it."""
    settings = addon_stack.scheduler[SCHEDULER].settings
    return bk.addon_run_dir(settings.run_root(), host_id, addon_id)


async def test_database_has_a_backup_socket_in_its_run_folder(addon_stack: AddonStack) -> None:
    """Run folder 02770 + setgid group; socket 0770 there; slipway_backup replicates through it."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgdoor")
    addon = await provisioned(alice, "pgdoor")
    url = (await alice.ok("GET", "/apps/pgdoor/config-vars"))["DATABASE_URL"]
    made = await psql(
        addon_stack.scope.network(app["id"]),
        url,
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)",
    )
    assert made.returncode == 0, made.stderr

    folder = run_dir(addon_stack, addon["id"])
    info = os.lstat(folder)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o2770
    assert (info.st_uid, info.st_gid) == (0, 0)  # backup_user "" is root
    socket = os.lstat(folder / ".s.PGSQL.5432")
    assert stat.S_ISSOCK(socket.st_mode) and stat.S_IMODE(socket.st_mode) == 0o770
    assert socket.st_gid == info.st_gid  # the backup user's group, through setgid
    assert stat.S_ISDIR(os.lstat(folder / "archive").st_mode)

    container = await database_container(app["id"])
    assert container["HostConfig"]["GroupAdd"] == ["0"]
    assert {"Type": "bind", "Source": str(folder), "Target": bk.MOUNT} in [
        {k: m[k] for k in ("Type", "Source", "Target")} for m in container["HostConfig"]["Mounts"]
    ]

    async with await pgwire.connect(folder, user=bk.BACKUP_ROLE, replication=True) as conn:
        system = await conn.identify_system()
        assert system.timeline == 1
        await conn.create_physical_slot(bk.REPLICATION_SLOT)
        assert await conn.slot_restart_lsn(bk.REPLICATION_SLOT) is not None
    database = urlsplit(url).path.lstrip("/")
    async with await pgwire.connect(folder, user=bk.BACKUP_ROLE, database=database) as conn:
        # pg_read_all_data: the manifests' row counts.
        assert await conn.query("SELECT count(*) FROM t") == [("2",)]
        with pytest.raises(pgwire.PgError) as refused:
            await conn.query("INSERT INTO t VALUES (3)")
        assert refused.value.code == "42501"  # read only


async def test_no_role_logs_in_over_tcp_without_its_password(addon_stack: AddonStack) -> None:
    """Over TCP neither the customer's role nor slipway_backup gets in without a password."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgnopass")
    await provisioned(alice, "pgnopass")
    url = (await alice.ok("GET", "/apps/pgnopass/config-vars"))["DATABASE_URL"]
    parts = urlsplit(url)
    network = addon_stack.scope.network(app["id"])
    host = f"{parts.hostname}:{parts.port}{parts.path}"
    for user in (parts.username, bk.BACKUP_ROLE, "postgres"):
        answer = await psql(network, f"postgres://{user}@{host}", "SELECT 1")
        assert answer.returncode != 0, (user, answer.stdout)
        # scram-sha-256 asks for a password, which psql (no terminal) does not have.
        assert "password" in answer.stderr, (user, answer.stderr)
    assert (await psql(network, url, "SELECT 1")).returncode == 0


async def _events(
    addon_stack: AddonStack, addon_id: str
) -> tuple[asyncio.Queue[ac.AddonChanged], Callable[[], Awaitable[None]]]:
    """AddonChanged events of `addon_id` as the scheduler publishes them (a core subscription)."""
    queue: asyncio.Queue[ac.AddonChanged] = asyncio.Queue()
    decoder = msgspec.json.Decoder(ac.AddonChanged)

    async def got(msg: Msg) -> None:
        event = decoder.decode(msg.data)
        if event.addon_id == addon_id:
            queue.put_nowait(event)

    subscription = await addon_stack.stack.bus.nc.subscribe(ac.ADDON_CHANGED.subject, cb=got)
    return queue, subscription.unsubscribe


async def _recreate_with_restore(
    addon_stack: AddonStack, addon: dict[str, Any], source_id: str, to_time: str = ""
) -> None:
    """Remove the add-on's database and ask the scheduler for it again, as a restore."""
    info = await _container_of(addon["id"])
    async with aiodocker.Docker() as docker:
        await docker.containers.container(info["Id"]).delete(force=True)
        for mount in info["Mounts"]:
            if mount["Type"] == "volume":
                await aiodocker.volumes.DockerVolume(docker, mount["Name"]).delete()  # type: ignore[no-untyped-call]
    record = await addonstore.get(addon_stack.stack.gw.reader, addon["id"])
    assert record is not None
    want = msgspec.structs.replace(
        desired(record, addon["app"]["name"]),
        restore=ac.RestoreFrom(source_addon_id=source_id, to_time=to_time),
    )
    await addon_stack.stack.bus.publish(ac.ADDON_CREATED, ac.AddonCreated(addon=want, actor="t"))


@dataclass
class Written:
    """A source database backed up by hand, with rows after the backup in archived WAL only."""

    network: str
    source: dict[str, Any]
    source_url: str
    target: dict[str, Any]
    target_url: str
    base: Path  # the tar BASE_BACKUP gave
    archive: Path  # the source's archive/ (archive_command's copies)
    end_lsn: str
    between: str  # ISO 8601: after rows 1-5 committed, before row 99


async def _backup_then_write(addon_stack: AddonStack, tmp_path: Path, name: str) -> Written:
    """Two databases on app `name`; the first gets rows 1-2, a base backup, rows 3-5, 99."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, name)
    network = addon_stack.scope.network(app["id"])
    source = await provisioned(alice, name)
    source_url = (await alice.ok("GET", f"/apps/{name}/config-vars"))["DATABASE_URL"]
    target = await provisioned(alice, name)
    target_url = (await alice.ok("GET", f"/apps/{name}/config-vars"))[target["config_vars"][0]]
    made = await psql(network, source_url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
    assert made.returncode == 0, made.stderr

    # The backup, as the backup service takes it: through the run folder's socket.
    folder = run_dir(addon_stack, source["id"])
    base = tmp_path / "base.tar"
    async with await pgwire.connect(folder, user=bk.BACKUP_ROLE, replication=True) as conn:
        with base.open("wb") as out:
            async for piece in conn.base_backup(label="test"):
                if piece.kind == "data":
                    out.write(piece.data)
    # Rows after the backup live only in the WAL: archive_command copies each full segment.
    later = await psql(network, source_url, "INSERT INTO t VALUES (3), (4), (5)")
    assert later.returncode == 0, later.stderr
    # Another session: one psql -c is one transaction, which commits after its last statement.
    now = await psql(network, source_url, "SELECT to_json(clock_timestamp()) #>> '{}'")
    assert now.returncode == 0, now.stderr
    between = now.stdout.strip()
    last_row = await psql(network, source_url, "INSERT INTO t VALUES (99)")
    assert last_row.returncode == 0, last_row.stderr
    switched = await _superuser(addon_stack, source, "SELECT pg_switch_wal()")
    last = pgwire.segment_name(1, pgwire.parse_lsn(switched) - 1)

    def archived() -> None:
        assert (folder / "archive" / last).is_file()

    await assert_eventually(archived, timeout=30)
    return Written(
        network=network,
        source=source,
        source_url=source_url,
        target=target,
        target_url=target_url,
        base=base,
        archive=folder / "archive",
        end_lsn=switched,
        between=between,
    )


async def _restore(addon_stack: AddonStack, written: Written, to_time: str) -> ac.AddonChanged:
    """Stage `written` (as the backup service would) for its target; the scheduler's answer."""

    async def stage(request: bk.StageRestore) -> bk.RestoreStaged:
        assert request.source_addon_id == written.source["id"]
        assert request.target_addon_id == written.target["id"] and request.host_id == "local"
        assert request.to_time == to_time
        restore = run_dir(addon_stack, request.target_addon_id) / "restore"
        (restore / "wal").mkdir(parents=True)
        (restore / "base.tar").write_bytes(written.base.read_bytes())
        for segment in written.archive.iterdir():
            if len(segment.name) == 24:
                (restore / "wal" / segment.name).write_bytes(segment.read_bytes())
        (restore / "target").write_text(to_time + "\n")
        (restore / "READY").write_text("")
        return bk.RestoreStaged(backup_num=1, to_time=to_time, end_lsn=written.end_lsn)

    await addon_stack.stack.bus.serve(bk.RESTORE_STAGE, stage)
    events, unsubscribe = await _events(addon_stack, written.target["id"])
    try:
        await _recreate_with_restore(
            addon_stack, written.target, written.source["id"], to_time=to_time
        )
        return await asyncio.wait_for(events.get(), RESTORE_TIMEOUT)
    finally:
        await unsubscribe()


async def test_staged_restore_comes_up_with_every_row_and_takes_writes(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """Base backup + later WAL staged in restore/ → every row, writes accepted, restore/ gone."""
    written = await _backup_then_write(addon_stack, tmp_path, "pgrestore")
    outcome = await _restore(addon_stack, written, to_time="")
    assert outcome.state == "provisioned", outcome.reason

    network, url = written.network, written.target_url
    rows = await psql(network, url, "SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
    assert rows.stdout.strip() == "1,2,3,4,5,99", rows.stderr
    wrote = await psql(network, url, "INSERT INTO t VALUES (6); SELECT count(*) FROM t")
    assert wrote.stdout.strip().splitlines()[-1] == "7", wrote.stderr
    assert not (run_dir(addon_stack, written.target["id"]) / "restore").exists()
    assert await _superuser(addon_stack, written.target, "SHOW restore_command") == ""
    assert await _superuser(addon_stack, written.target, "SELECT pg_is_in_recovery()") == "f"
    # The source is untouched by all this.
    rows = await psql(network, written.source_url, "SELECT count(*) FROM t")
    assert rows.stdout.strip() == "6", rows.stderr


async def test_staged_restore_stops_at_the_target_time(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """restore/target between two commits → the rows committed before it, none after."""
    written = await _backup_then_write(addon_stack, tmp_path, "pgpitr")
    outcome = await _restore(addon_stack, written, to_time=written.between)
    assert outcome.state == "provisioned", outcome.reason
    rows = await psql(
        written.network, written.target_url, "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"
    )
    assert rows.stdout.strip() == "1,2,3,4,5", rows.stderr
    # Reset in the file (the running server keeps a postmaster setting until its restart).
    auto = await _superuser(
        addon_stack, written.target, "SELECT pg_read_file('postgresql.auto.conf')"
    )
    assert "recovery_target" not in auto and "restore_command" not in auto


async def test_a_target_past_the_wal_fails_the_addon_with_a_reason(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """WAL that never reaches the target time: recovery stops, the add-on fails, says why."""
    written = await _backup_then_write(addon_stack, tmp_path, "pgtoofar")
    outcome = await _restore(addon_stack, written, to_time="2999-01-01T00:00:00+00:00")
    assert outcome.state == "failed"
    assert outcome.reason.startswith("Restoring the backup failed: the database stopped")
    info = await _container_of(written.target["id"])
    assert not info["State"]["Running"]  # not left to fail again and again


async def test_a_failed_stage_fails_the_addon_with_a_reason(addon_stack: AddonStack) -> None:
    """The backup service's refusal to stage reaches the customer as the add-on's reason."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "pgnostage")
    target = await provisioned(alice, "pgnostage")

    async def stage(request: bk.StageRestore) -> bk.RestoreStaged:
        raise NotFound("No backup 7 of postgresql-gone-1234.")

    await stack.bus.serve(bk.RESTORE_STAGE, stage)
    events, unsubscribe = await _events(addon_stack, target["id"])
    try:
        await _recreate_with_restore(addon_stack, target, "source-0000")
        outcome = await asyncio.wait_for(events.get(), RESTORE_TIMEOUT)
    finally:
        await unsubscribe()
    assert outcome.state == "failed"
    assert outcome.reason == "Restoring the backup failed: No backup 7 of postgresql-gone-1234."


async def _container_of(addon_id: str) -> dict[str, Any]:
    """`docker inspect` of one add-on's database container."""
    async with aiodocker.Docker() as docker:
        listed = await docker.containers.list(
            all=True, filters={"label": [f"{ac.LABEL_ADDON}={addon_id}"]}
        )
        assert len(listed) == 1, listed
        return await listed[0].show()


async def _superuser(addon_stack: AddonStack, addon: dict[str, Any], sql: str) -> str:
    """`sql`'s one value, run as `postgres` inside the add-on's container."""
    info = await _container_of(addon["id"])
    async with aiodocker.Docker() as docker:
        code, output = await run_psql(
            docker.containers.container(info["Id"]),
            ["psql", "-XAtq", "-h", "/run/postgresql", "-d", "postgres", "-c", sql],
        )
    assert code == 0, output
    return output.strip()


async def test_destroying_the_addon_removes_its_run_folder(addon_stack: AddonStack) -> None:
    """The run folder (socket, archived WAL) goes with the database's container and volume."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "pgrundir")
    addon = await provisioned(alice, "pgrundir")
    folder = run_dir(addon_stack, addon["id"])
    assert (folder / "archive").is_dir()
    record = await addonstore.get(stack.gw.reader, addon["id"])
    assert record is not None
    events, unsubscribe = await _events(addon_stack, addon["id"])
    try:
        await stack.bus.publish(
            ac.ADDON_DESTROYED, ac.AddonDestroyed(addon=desired(record, "pgrundir"), actor="t")
        )
        outcome = await asyncio.wait_for(events.get(), RESTORE_TIMEOUT)
    finally:
        await unsubscribe()
    assert outcome.state == "deprovisioned"
    assert not folder.exists()
    assert folder.parent.is_dir()  # the host's folder stays, for its other databases


@pytest.fixture
async def nobody_stack(
    stack: Stack, scope: Scope, postgres_image: str
) -> AsyncIterator[AddonStack]:
    """The scheduler with `nobody` as the backup user, run folders where `nobody` can walk."""
    root = Path(tempfile.mkdtemp(prefix="slipway-run-"))  # not below pytest's root-only folder
    root.chmod(0o755)
    try:
        async with running_scheduler(
            stack, scope, backup_user="nobody", addon_run_dir=str(root)
        ) as running:
            yield running
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)


async def _as_user(uid: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        args,
        user=uid,
        group=uid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_only_the_backup_users_group_reaches_the_socket_and_archive(
    nobody_stack: AddonStack,
) -> None:
    """The backup user (`nobody`) replicates through the socket and reads archived WAL; a
    stranger can do neither."""
    stack = nobody_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "pgnobody")
    addon = await provisioned(alice, "pgnobody")
    folder = run_dir(nobody_stack, addon["id"])
    info = os.lstat(folder)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o2770)
    assert os.lstat(folder / ".s.PGSQL.5432").st_gid == NOBODY
    container = await _container_of(addon["id"])
    assert container["HostConfig"]["GroupAdd"] == [str(NOBODY)]

    probe = [sys.executable, "-c", PROBE, str(folder)]
    backup = await _as_user(NOBODY, probe)
    assert backup.returncode == 0 and backup.stdout.strip() == "1", backup.stderr
    stranger = await _as_user(STRANGER, probe)
    assert stranger.returncode != 0
    assert "PermissionError" in stranger.stderr, stranger.stderr

    switched = await _superuser(nobody_stack, addon, "SELECT pg_switch_wal()")
    segment = folder / "archive" / pgwire.segment_name(1, pgwire.parse_lsn(switched) - 1)

    def archived() -> None:
        assert segment.is_file()

    await assert_eventually(archived, timeout=30)
    assert os.lstat(segment).st_gid == NOBODY
    read = await _as_user(NOBODY, ["wc", "-c", str(segment)])
    assert read.returncode == 0 and read.stdout.split()[0] == str(16 * 1024 * 1024), read.stderr
    refused = await _as_user(STRANGER, ["wc", "-c", str(segment)])
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


async def test_destroying_the_app_removes_its_databases_run_folders(
    addon_stack: AddonStack,
) -> None:
    """An app's end takes its databases' run folders with their containers."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgappgone")
    addon = await provisioned(alice, "pgappgone")
    folder = run_dir(addon_stack, addon["id"])
    assert folder.is_dir()
    record = await addonstore.get(stack.gw.reader, addon["id"])
    assert record is not None
    await stack.bus.publish(
        gw.APP_DESTROYED,
        gw.AppDestroyed(app_id=app["id"], name="pgappgone", team_id=record.team_id, actor="t"),
    )

    def removed() -> None:
        assert not folder.exists()

    await assert_eventually(removed, timeout=30)
