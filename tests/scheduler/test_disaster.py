"""After a platform restore on a fresh machine: dynos and databases come back by themselves.

The services start on their restored databases while the engine is empty. Here that is
a scheduler (and backup service) stopped, every container, network and volume of the
test's scope removed, and started again on the same home: the scheduler's records name
containers that no longer exist, the gateway holds the add-on as provisioned, the backup
catalog and the shared backup storage hold its backups and WAL. Real Docker, real NATS,
the real gateway, keyring, backup service and PostgreSQL add-on image.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from slipway.contracts import backup as bk
from slipway.contracts import scheduler as sc
from slipway.contracts.addons import LABEL_ADDON
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.services.backup.app import create_service as create_backup
from slipway.services.scheduler.app import SCHEDULER
from tests.addons.conftest import (  # noqa: F401 - fixtures
    AddonStack,
    backup_settings,
    postgres_image,
    running_scheduler,
)
from tests.addons.test_postgresql import provisioned, psql, volumes_of
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    Api,
    Stack,
    gateway_service,
    keyring_service,
    run_in_background,
    slipway_home,
    stack,
    stop,
)
from tests.scheduler.conftest import Cluster, StandInGateway

pytestmark = [pytest.mark.docker, pytest.mark.integration]

RESTORE_TIMEOUT = 40.0


@contextlib.asynccontextmanager
async def backup_service(addons: AddonStack, **overrides: Any) -> AsyncIterator[None]:
    """The backup service on the stack's home (its catalog outlives each run)."""
    service = create_backup(backup_settings(addons, **overrides))
    task = await run_in_background(service)
    try:
        yield
    finally:
        await stop(service, task)


async def sql(network: str, url: str, query: str) -> str:
    answer = await psql(network, url, query)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


async def streamed_past(owner: Api, app: str, addon: str, after: str) -> None:
    """Wait until the WAL archive holds everything written before `after`."""

    async def caught_up() -> None:
        wal: dict[str, Any] = await owner.ok("GET", f"/apps/{app}/addons/{addon}/wal")
        assert wal["streaming"] is True, wal
        assert wal["last_stored_at"] > after, wal

    await assert_eventually(caught_up, timeout=60, interval=0.5)


async def running_database(app_id: str) -> dict[str, Any]:
    """`docker inspect` of the app's one database container, once it runs."""
    async with aiodocker.Docker() as docker:
        listed = await docker.containers.list(
            all=True, filters={"label": [f"{sc.LABEL_APP}={app_id}", LABEL_ADDON]}
        )
        assert len(listed) == 1, [c._container.get("Names") for c in listed]
        shown: dict[str, Any] = await listed[0].show()
    assert shown["State"]["Running"], shown["State"]
    return shown


def copy_catalog(db: Path, to: Path) -> None:
    """The backup catalog as a platform snapshot holds it: SQLite's online backup."""
    with (
        contextlib.closing(sqlite3.connect(db)) as src,
        contextlib.closing(sqlite3.connect(to)) as dst,
    ):
        src.backup(dst)


def restore_catalog(copy: Path, db: Path) -> None:
    """Put the older copy in place of the backup catalog (the service is stopped)."""
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        extra.unlink(missing_ok=True)
    shutil.copyfile(copy, db)


def run_dir(addons: AddonStack, addon_id: str) -> Path:
    """The add-on's run folder on host `local`."""
    return bk.addon_run_dir(addons.scheduler[SCHEDULER].settings.run_root(), "local", addon_id)


async def empty_engine(folder: Path) -> None:
    """What a fresh machine has of the add-on: no run folder either (containers, networks
    and volumes of the scope went when the scheduler's context was left)."""
    await asyncio.to_thread(shutil.rmtree, folder, True)


async def test_a_database_on_no_host_comes_back_from_its_own_backups(
    stack: Stack,  # noqa: F811 - the fixture imported above
    scope: Scope,
    postgres_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Base backup + WAL after it → same add-on, rows up to the last WAL, old password, new base.

    The backup catalog comes back as the snapshot had it, before the last WAL was stored:
    the rest is read from the storage's signed manifests."""
    alice = await stack.user("alice@example.com")
    catalog = tmp_path / "catalog-at-snapshot.db"
    async with running_scheduler(stack, scope) as first, backup_service(first):
        app = await stack.app(alice, "drpg")
        addon = await provisioned(alice, "drpg")
        url = (await alice.ok("GET", "/apps/drpg/config-vars"))["DATABASE_URL"]
        network = scope.network(app["id"])
        await sql(network, url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
        base = await alice.ok("POST", f"/apps/drpg/addons/{addon['name']}/backups", status=201)
        assert base["state"] == "completed", base
        db = backup_settings(first).db_path()
        await asyncio.to_thread(copy_catalog, db, catalog)  # the platform snapshot's copy
        # Only in the WAL streamed after the base backup (and the snapshot): the recovery point.
        await sql(network, url, "INSERT INTO t VALUES (3)")
        await streamed_past(alice, "drpg", addon["name"], dt.datetime.now(dt.UTC).isoformat())
        old = (await running_database(app["id"]))["Id"]
        folder = run_dir(first, addon["id"])
    await empty_engine(folder)
    await asyncio.to_thread(restore_catalog, catalog, db)
    assert await volumes_of(app["id"]) == []
    gone_at = dt.datetime.now(dt.UTC).isoformat()

    # Its WAL stream tries every 0.1 s: it meets the database while that replays its WAL.
    async with running_scheduler(stack, scope) as second, backup_service(second, retry_seconds=0.1):
        found = await assert_eventually(
            lambda: running_database(app["id"]), timeout=RESTORE_TIMEOUT, interval=0.5
        )
        assert found["Id"] != old
        assert found["Name"].lstrip("/").endswith(addon["name"])
        volumes = await volumes_of(app["id"])
        assert len(volumes) == 1, volumes
        async with aiodocker.Docker() as docker:
            volume = await aiodocker.volumes.DockerVolume(docker, volumes[0]).show()  # type: ignore[no-untyped-call]
        assert volume["CreatedAt"][:19] >= gone_at[:19], volume  # new, not the old one

        async def rows_back() -> str:
            # The original DATABASE_URL: same host name, database, role and password.
            return await sql(network, url, "SELECT n FROM t ORDER BY n")

        rows = await assert_eventually(rows_back, timeout=RESTORE_TIMEOUT, interval=0.5)
        assert rows.split() == ["1", "2", "3"]
        await sql(network, url, "INSERT INTO t VALUES (4)")  # promoted: it takes writes
        assert (await alice.ok("GET", "/apps/drpg/config-vars"))["DATABASE_URL"] == url
        record = await alice.ok("GET", f"/apps/drpg/addons/{addon['name']}")
        assert record["id"] == addon["id"] and record["state"] == "provisioned", record

        async def fresh_base() -> list[dict[str, Any]]:
            listed = await alice.ok("GET", f"/apps/drpg/addons/{addon['name']}/backups")
            done = [b for b in listed if b["state"] == "completed"]
            assert len(done) == 2, listed
            return done

        backups = await assert_eventually(fresh_base, timeout=RESTORE_TIMEOUT, interval=0.5)
        assert {b["id"] for b in backups} == {base["id"], "b002"}  # the old one stays listed
        # Its WAL is archived again, on its new timeline: the new history restores...
        await sql(network, url, "INSERT INTO t VALUES (5)")
        await streamed_past(alice, "drpg", addon["name"], dt.datetime.now(dt.UTC).isoformat())
        created = await alice.ok(
            "POST",
            "/apps/drpg/addons",
            {"plan": "postgresql:mini", "config": {"restore_from": addon["name"]}},
            status=202,
        )

        async def copied() -> str:
            found = await alice.ok("GET", f"/apps/drpg/addons/{created['name']}")
            assert not found["provision_message"].startswith("Provisioning failed"), found
            assert found["state"] == "provisioned", found
            var = found["config_vars"][0]
            other = (await alice.ok("GET", "/apps/drpg/config-vars"))[var]
            return await sql(network, other, "SELECT n FROM t ORDER BY n")

        rows = await assert_eventually(copied, timeout=RESTORE_TIMEOUT, interval=0.5)
        assert rows.split() == ["1", "2", "3", "4", "5"]
        # ... and so does the old one, before the disaster.
        path = f"/apps/drpg/addons/{addon['name']}/backups/{base['id']}/objects"
        assert [o for o in await alice.ok("GET", path) if o["kind"] == "wal"]
    await empty_engine(folder)


async def test_a_database_without_a_backup_is_said_not_to_come_back(
    stack: Stack,  # noqa: F811 - the fixture imported above
    scope: Scope,
    postgres_image: str,  # noqa: F811
) -> None:
    """No completed backup: no empty database in its place; the add-on says why, in the API.

    The scheduler starts before the backup service: a stage request nobody answered yet is
    no verdict (the scheduler waits, or asks again)."""
    alice = await stack.user("alice@example.com")
    async with running_scheduler(stack, scope) as first, backup_service(first):
        app = await stack.app(alice, "drnone")
        addon = await provisioned(alice, "drnone")
        url = (await alice.ok("GET", "/apps/drnone/config-vars"))["DATABASE_URL"]
        folder = run_dir(first, addon["id"])
    await empty_engine(folder)

    async with running_scheduler(stack, scope) as second:
        # The recovery made the run folder; no backup service has answered its stage yet.
        await assert_eventually(folder.is_dir, timeout=60, interval=0.25)
        path = f"/apps/drnone/addons/{addon['name']}"
        assert not (await alice.ok("GET", path))["provision_message"].startswith("Not running")
        async with backup_service(second):

            async def told() -> dict[str, Any]:
                found: dict[str, Any] = await alice.ok("GET", path)
                assert found["provision_message"].startswith("Not running:"), found
                return found

            found = await assert_eventually(told, timeout=60, interval=0.5)
        assert "no completed backup" in found["provision_message"], found
        assert found["state"] == "provisioned"  # its config var and record stay
        assert (await alice.ok("GET", "/apps/drnone/config-vars"))["DATABASE_URL"] == url
        async with aiodocker.Docker() as docker:
            listed = await docker.containers.list(
                all=True, filters={"label": [f"{sc.LABEL_APP}={app['id']}", LABEL_ADDON]}
            )
            assert listed == []
    await empty_engine(folder)


@pytest.fixture
async def one_engine(
    nats_server: NatsServer, sched_image: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """The scheduler on the main engine only, with the stand-in gateway (tests/scheduler)."""
    bus = await Bus.connect(nats_server.url, "gateway")
    await bus.ensure_streams()
    gateway = StandInGateway(bus=bus, image=sched_image)
    await gateway.serve()
    made = Cluster(
        nats=nats_server,
        bus=bus,
        gateway=gateway,
        hosts=[],
        scope=new_scope(),
        home=tmp_path / "home",
    )
    try:
        yield made
    finally:
        await made.stop()
        await bus.close()
        await asyncio.to_thread(remove_scope_objects, made.scope)


async def test_a_dyno_whose_container_vanished_is_started_again_once(one_engine: Cluster) -> None:
    """Records naming vanished containers: the formation starts once, the stale rows go."""
    cluster = one_engine
    await cluster.start()
    await cluster.add_hosts()
    app_id = uuid.uuid4().hex
    await cluster.gateway.release(app_id, 1, {"web": 2})

    async def up(count: int) -> list[sc.Dyno]:
        dynos = await cluster.dynos(app_id)
        assert [d.state for d in dynos] == ["up"] * count, dynos
        return dynos

    before = await assert_eventually(lambda: up(2), timeout=60, interval=0.25)
    await cluster.stop()
    # The fresh machine's engine: no container, no app network.
    await asyncio.to_thread(remove_scope_objects, cluster.scope)
    assert not (await cluster.containers(app_id))["main"]

    await cluster.start()
    after = await assert_eventually(lambda: up(2), timeout=60, interval=0.25)
    assert {d.name for d in after} == {"web.1", "web.2"}
    assert not {d.container_id for d in after} & {d.container_id for d in before}
    sched = cluster.sched
    # One more full pass and a listing: nothing else is started, nothing twice.
    await sched.full_pass(sync=False)

    def settled() -> None:
        assert sched.idle()

    await assert_eventually(settled, timeout=30)
    await sched.poll_all()
    listed = (await cluster.containers(app_id))["main"]
    assert sorted(str(c["Id"]) for c in listed) == sorted(str(d.container_id) for d in after)
    stored = await sched.store.restart_counts()
    assert set(stored) == {d.container_id for d in after}  # the vanished ones forgotten
