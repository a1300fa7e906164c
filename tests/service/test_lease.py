"""Leader leases: one instance of a leased service leads, the others stand by and take over."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from structlog.testing import capture_logs

from slipway.contracts import subjects
from slipway.contracts.subjects import KV_LEASES, OPERATOR, Service
from slipway.libs.bus.provision import ensure_streams, lease_bucket_config
from slipway.libs.lease import Lease, LeaseLost, fence, holder_for
from slipway.libs.natsserver import NatsCluster, NatsServer
from slipway.libs.service import ServiceApp, Settings
from slipway.libs.service.runner import EXIT_LEASE_LOST
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration

# A leased service that says when it leads and when it stops leading, run as a process.
LEADER = """
import asyncio, sys
from collections.abc import AsyncIterator
from slipway.contracts.subjects import Service
from slipway.libs.service import ServiceApp, Settings, run_service

url, user, password, home = sys.argv[1:5]
app = ServiceApp(Service.KEYRING, settings=Settings(
    nats_url=url, nats_user=user, nats_password=password, home=home, metrics="off",
    log_format="json", shutdown_grace=2.0))

@app.cleanup_ctx
async def leading(app: ServiceApp) -> AsyncIterator[None]:
    print("leading", flush=True)
    yield
    print("no longer leading", flush=True)

run_service(app)
"""


@pytest.fixture
def short_leases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    """A hardened server whose lease bucket expires a silent leader after two seconds."""
    monkeypatch.setenv("SLIPWAY_LEASE_TTL", "2")
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    yield server
    server.stop()


def settings(server: NatsServer, service: Service, home: Path) -> Settings:
    return Settings(
        nats_url=server.url,
        nats_user=str(service),
        nats_password=server.users[str(service)],
        home=str(home),
        metrics="off",
        shutdown_grace=2.0,
    )


def candidate(server: NatsServer, home: Path, leading: list[str], name: str) -> ServiceApp:
    """A keyring-like leased service that records in `leading` while it leads."""
    app = ServiceApp(Service.KEYRING, settings=settings(server, Service.KEYRING, home))

    @app.cleanup_ctx
    async def lead(app: ServiceApp) -> AsyncIterator[None]:
        leading.append(name)
        try:
            yield
        finally:
            leading.remove(name)

    return app


async def operator_kv(server: NatsServer) -> tuple[NATS, KeyValue]:
    nc = await nats.connect(
        server.url,
        user=OPERATOR,
        password=server.users[OPERATOR],
        inbox_prefix=subjects.inbox_prefix(OPERATOR),
    )
    return nc, await nc.jetstream().key_value(KV_LEASES)


async def test_one_instance_leads_and_the_other_takes_over_when_it_stops(
    short_leases: NatsServer, tmp_path: Path
) -> None:
    """Two instances, one store: one leads; stopped, it hands the lease to the other."""
    leading: list[str] = []
    first = candidate(short_leases, tmp_path, leading, "first")
    second = candidate(short_leases, tmp_path, leading, "second")
    first_task = asyncio.create_task(first.run(install_signals=False))
    await asyncio.wait_for(first.started.wait(), 20)
    second_task = asyncio.create_task(second.run(install_signals=False))

    def holder_is(instance: str) -> None:
        assert leading == [instance]

    await assert_eventually(lambda: holder_is("first"))
    await asyncio.sleep(1.0)  # two renewals later, the standby still waits
    assert leading == ["first"] and not second.started.is_set()

    first.stop()
    await asyncio.wait_for(first_task, 20)
    await asyncio.wait_for(second.started.wait(), 20)
    assert leading == ["second"]
    assert second.lease is not None and second.lease.held
    second.stop()
    await asyncio.wait_for(second_task, 20)
    assert first.exit_code == second.exit_code == 0


async def test_a_killed_leader_is_replaced_once_its_lease_expires(
    short_leases: NatsServer, tmp_path: Path
) -> None:
    """SIGKILL the leading process: the standby process leads within the ttl."""
    script = tmp_path / "leader.py"
    script.write_text(LEADER)
    root = str(Path(__file__).resolve().parents[2])
    argv = [
        str(script),
        short_leases.url,
        "keyring",
        short_leases.users["keyring"],
        str(tmp_path / "home"),
    ]
    procs: list[asyncio.subprocess.Process] = []
    for _ in range(2):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                cwd=root,
                env={**os.environ, "PYTHONPATH": root},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    try:
        lines = {
            asyncio.create_task(proc.stdout.readline()): proc  # type: ignore[union-attr]
            for proc in procs
        }
        done, _ = await asyncio.wait(lines, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, "no instance started leading"
        first = done.pop()
        assert first.result() == b"leading\n"
        leader = lines.pop(first)
        standby_line = next(iter(lines))
        await asyncio.sleep(0.5)
        assert not standby_line.done(), "both instances lead"

        leader.send_signal(signal.SIGKILL)
        await leader.wait()
        assert await asyncio.wait_for(standby_line, 20) == b"leading\n"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 20)


async def test_a_leader_whose_lease_was_taken_stops_and_says_so(
    short_leases: NatsServer, tmp_path: Path
) -> None:
    """Someone else's holder written over the leader's: it stops with EXIT_LEASE_LOST."""
    leading: list[str] = []
    app = candidate(short_leases, tmp_path, leading, "only")
    task = asyncio.create_task(app.run(install_signals=False))
    await asyncio.wait_for(app.started.wait(), 20)
    nc, kv = await operator_kv(short_leases)
    try:
        usurper = holder_for(Service.KEYRING, "usurper")
        await kv.put(str(Service.KEYRING), msgspec.json.encode(usurper))
        await asyncio.wait_for(task, 20)
    finally:
        await nc.close()
    assert app.exit_code == EXIT_LEASE_LOST
    assert leading == []


async def test_a_leader_keeps_its_lease_across_a_restart_of_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket lives in memory: a restarted nats-server forgets the key, and the leader,
    reconnected within its ttl, writes it again instead of stopping."""
    monkeypatch.setenv("SLIPWAY_LEASE_TTL", "6")
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    leading: list[str] = []
    app = candidate(server, tmp_path, leading, "only")
    task = asyncio.create_task(app.run(install_signals=False))
    try:
        await asyncio.wait_for(app.started.wait(), 20)
        server.restart()

        async def written_again() -> None:
            assert app.lease is not None and app.lease.held
            nc, kv = await operator_kv(server)
            try:
                entry = await kv.get(str(Service.KEYRING))
            except nats.js.errors.KeyNotFoundError as exc:
                raise AssertionError("not written again yet") from exc
            finally:
                await nc.close()
            assert entry.value is not None
            assert msgspec.json.decode(entry.value)["instance"] == app.bus.instance

        await assert_eventually(written_again, timeout=20, interval=0.5)
        assert not task.done() and leading == ["only"]
    finally:
        app.stop()
        await asyncio.wait_for(task, 20)
        server.stop()
    assert app.exit_code == 0


async def test_a_service_cannot_write_another_services_lease(
    short_leases: NatsServer, tmp_path: Path
) -> None:
    """The keyring's user may not overwrite the scheduler's lease, nor take its key."""
    nc = await nats.connect(
        short_leases.url,
        user="keyring",
        password=short_leases.users["keyring"],
        inbox_prefix=subjects.inbox_prefix("keyring"),
    )
    try:
        js = nc.jetstream(timeout=2.0)
        kv = await js.key_value(KV_LEASES)
        await kv.create("keyring", b"mine")  # its own: allowed
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await kv.create("scheduler", b"deposed")
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await kv.put("scheduler", b"deposed")
    finally:
        await nc.close()
    nc, operator = await operator_kv(short_leases)
    try:
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await operator.get("scheduler")
    finally:
        await nc.close()


async def test_renewing_a_lease_someone_else_holds_fails(short_leases: NatsServer) -> None:
    """Two candidates of one service: the second cannot renew the first's revision."""
    nc = await nats.connect(
        short_leases.url,
        user="keyring",
        password=short_leases.users["keyring"],
        inbox_prefix=subjects.inbox_prefix("keyring"),
    )
    try:
        js = nc.jetstream(timeout=2.0)
        one = await Lease.bind(js, Service.KEYRING, holder_for(Service.KEYRING, "one"))
        two = await Lease.bind(js, Service.KEYRING, holder_for(Service.KEYRING, "two"))
        assert one.ttl == 2.0
        stop = asyncio.Event()
        assert await one.acquire(until=stop)
        holder = await two.current()
        assert holder is not None and holder.instance == "one"
        two.revision = one.revision  # a stale leader that believes it still holds it
        await one.renew()
        with pytest.raises(LeaseLost):
            await two.renew()
        await one.release()
        assert await two.current() is None
        assert await two.acquire(until=stop)
    finally:
        await nc.close()


async def test_the_fence_keeps_a_second_leader_waiting(tmp_path: Path) -> None:
    """Whoever holds the store's lock keeps the next leader out until it lets go."""
    lock = tmp_path / "leader.lock"
    never = asyncio.Event()
    order: list[str] = []

    async def second() -> None:
        async with fence(lock, until=never) as fenced:
            assert fenced
            order.append("second in")

    async with fence(lock, until=never) as fenced:
        assert fenced
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.5)
        assert order == []
        order.append("first out")
    await asyncio.wait_for(waiting, 5)
    assert order == ["first out", "second in"]

    stop = asyncio.Event()
    stop.set()
    async with fence(lock, until=never), fence(lock, until=stop) as fenced:
        assert fenced is False  # asked to stop while waiting: gives up, holds nothing


async def keyring_js(server: NatsServer) -> tuple[NATS, JetStreamContext]:
    nc = await nats.connect(
        server.url,
        user="keyring",
        password=server.users["keyring"],
        inbox_prefix=subjects.inbox_prefix("keyring"),
    )
    return nc, nc.jetstream(timeout=2.0)


async def test_a_renewal_stored_after_its_timeout_keeps_the_lease(
    short_leases: NatsServer,
) -> None:
    """Our own value written behind our back (a renewal whose ack came too late): kept."""
    nc, js = await keyring_js(short_leases)
    try:
        lease = await Lease.bind(js, Service.KEYRING, holder_for(Service.KEYRING, "one"))
        assert await lease.acquire(until=asyncio.Event())
        assert lease.revision is not None
        landed = await lease.kv.update("keyring", lease._value(), last=lease.revision)
        await lease.renew()
        assert lease.revision is not None and lease.revision > landed
    finally:
        await nc.close()


async def test_a_leader_woken_late_keeps_a_lease_that_never_changed_hands(
    short_leases: NatsServer,
) -> None:
    """Past its own deadline (a stalled loop) a renewal the server accepts keeps the lease;
    one the server refuses (the key expired meanwhile) loses it."""
    nc, js = await keyring_js(short_leases)
    lost: list[str] = []
    try:
        lease = await Lease.bind(js, Service.KEYRING, holder_for(Service.KEYRING, "one"))
        assert await lease.acquire(until=asyncio.Event())
        lease._renewed_at -= 100  # as if the loop had stalled since the last renewal
        keeper = asyncio.create_task(lease.keep(lost.append))
        await asyncio.sleep(lease.renew_every * 2.5)
        assert lost == [] and lease.held
        keeper.cancel()
        await asyncio.sleep(lease.ttl + 1.0)  # nobody renews: the server expires the key
        lease._renewed_at -= 100
        await asyncio.wait_for(lease.keep(lost.append), lease.renew_every * 3)
        assert len(lost) == 1 and not lease.held
    finally:
        await nc.close()


async def test_a_candidate_waits_out_a_bucket_that_is_not_there_yet(
    nats_server: NatsServer,
) -> None:
    """Started before the bucket exists (the provisioner has not run yet): it waits, then binds."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=1.0)
        holder = holder_for(Service.KEYRING, "early")
        binding = asyncio.create_task(
            Lease.bind_when_ready(js, Service.KEYRING, holder, until=asyncio.Event(), poll=0.2)
        )
        await asyncio.sleep(1.0)
        assert not binding.done()
        await ensure_streams(js, lease_ttl=2.0)
        lease = await asyncio.wait_for(binding, 10)
        assert lease is not None and lease.ttl == 2.0
    finally:
        await nc.close()


async def test_a_candidate_keeps_campaigning_while_the_cluster_has_no_quorum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes of three gone while standing by: the candidate retries (no crash) and
    leads once they are back."""
    monkeypatch.setenv("SLIPWAY_LEASE_TTL", "2")
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    survivor, *lost = cluster.nodes
    nc = await nats.connect(
        survivor.url,
        user="keyring",
        password=cluster.users["keyring"],
        inbox_prefix=subjects.inbox_prefix("keyring"),
    )
    try:
        js = nc.jetstream(timeout=1.0)
        lease = await Lease.bind(js, Service.KEYRING, holder_for(Service.KEYRING, "one"), poll=0.2)
        for node in lost:
            node.kill()
        # A write needs a quorum of the bucket's nodes: none commits with one node of three.
        with capture_logs() as logs:
            campaign = asyncio.create_task(lease.acquire(until=asyncio.Event()))

            def failed_twice() -> None:
                failed = [e for e in logs if e["event"] == "lease.campaign_failed"]
                assert len(failed) >= 2, logs

            await assert_eventually(failed_twice, timeout=30)
        assert not campaign.done(), campaign.exception() if campaign.done() else None
        for node in lost:
            node.start()
        assert await asyncio.wait_for(campaign, 60)
    finally:
        await nc.close()
        cluster.stop()


async def test_a_lease_bucket_an_earlier_version_made_on_disk_is_kept_and_updated(
    nats_server: NatsServer,
) -> None:
    """The server cannot move a stream to memory: provisioning keeps it on disk, still
    applying the ttl, rather than failing every start."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=2.0)
        await js.add_stream(
            dataclasses.replace(lease_bucket_config(5.0), storage=api.StorageType.FILE)
        )
        await ensure_streams(js, lease_ttl=3.0)
        info = await js.stream_info(subjects.STREAM_LEASES)
        assert info.config.storage == api.StorageType.FILE
        assert info.config.max_age == 3.0
    finally:
        await nc.close()
