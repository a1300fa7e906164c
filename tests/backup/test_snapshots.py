"""Platform snapshots: the real backup service and keyring over a real nats-server.

The services whose state is exported are mostly stood in for by `FakeExporter`s answering
the real contracts (the real exporters are tested in tests/snapshot); the last test takes
one of the real keyring and backup service and restores it on trial (libs/snapshot). The
backup service stores into a folder of the test's own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from slipway.contracts import keyring
from slipway.contracts import snapshot as sc
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.libs.errors import RemoteConflict, RemoteForbidden, RemoteInvalidRequest
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.libs.snapshot import manifest as mf
from slipway.libs.snapshot.restore import dry_run
from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.errors import StorageError
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.storage import LocalFolder
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.handlers import ROTATOR
from slipway.services.keyring.settings import KeyringSettings
from tests.backup.snapshot_exporters import FakeExporter
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop

pytestmark = pytest.mark.integration


@dataclass
class Snapshotting:
    """A running backup service, an operator's bus, and the recovery identity."""

    backup: ServiceApp
    settings: BackupSettings
    operator: Bus
    identity: bytes

    def folder(self, snapshot_id: str) -> Path:
        return self.settings.storage_root() / mf.STORAGE_PREFIX / snapshot_id

    async def take(self) -> sc.SnapshotInfo:
        """Ask for a snapshot as the operator; the answer comes while it runs."""
        answer = await self.operator.call(
            sc.SNAPSHOT_TAKE, sc.TakeSnapshot(requested_by="ops@example.com"), timeout=15.0
        )
        return answer.snapshot

    async def listing(self) -> list[sc.SnapshotInfo]:
        answer = await self.operator.call(sc.SNAPSHOTS_LIST, sc.ListSnapshots(), timeout=15.0)
        return answer.snapshots

    async def finished(self, snapshot_id: str) -> sc.SnapshotInfo:
        """The snapshot once it has completed or failed."""

        async def done() -> sc.SnapshotInfo:
            found = {s.id: s for s in await self.listing()}
            assert snapshot_id in found and found[snapshot_id].state != "running"
            return found[snapshot_id]

        return await assert_eventually(done, timeout=30.0)

    async def verify(self, snapshot_id: str) -> sc.SnapshotCheck:
        return await self.operator.call(
            sc.SNAPSHOT_VERIFY, sc.VerifySnapshot(snapshot_id=snapshot_id), timeout=30.0
        )

    async def signing_key(self) -> str:
        found = await self.operator.call(keyring.AUDIT_KEY, keyring.GetAuditKey())
        return found.public_key.hex()


Start = Callable[..., Awaitable[Snapshotting]]


@pytest.fixture
async def snapshotting(
    nats_server: NatsServer,
    slipway_home: Path,
    keyring_service: ServiceApp,
    bus_factory: Callable[[str], Awaitable[Bus]],
    tmp_path: Path,
) -> AsyncIterator[Start]:
    """Start the backup service (settings overridable) beside the real keyring."""
    started: list[tuple[ServiceApp, asyncio.Task[None]]] = []
    identity = age.generate_identity()

    async def start(**overrides: Any) -> Snapshotting:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "home": str(slipway_home),
            "shutdown_grace": 5.0,
            "schedule_check_seconds": 3600.0,
            "backup_storage_dir": str(tmp_path / "objects"),
            "recovery_recipients": age.format_recipient(age.public_of(identity)),
            "snapshot_interval": 0.0,
            "snapshot_exporters": "gateway,scheduler",
            **overrides,
        }
        settings = BackupSettings(**values)
        service = create_backup(settings)
        started.append((service, await run_in_background(service)))
        return Snapshotting(service, settings, await bus_factory("operator"), identity)

    yield start
    for service, task in reversed(started):
        await stop(service, task)


@pytest.fixture
async def exporter(
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> AsyncIterator[Callable[..., Awaitable[FakeExporter]]]:
    """Serve a fake exporter of a service; any left waiting are let go at the end."""
    made: list[FakeExporter] = []

    async def serve(service: Service, **options: Any) -> FakeExporter:
        fake = await FakeExporter(await bus_factory(str(service)), service, **options).start()
        made.append(fake)
        return fake

    yield serve
    for fake in made:
        fake.go.set()


def opened(piece: bytes, identity: bytes) -> bytes:
    return (
        zstandard.ZstdDecompressor().decompressobj().decompress(age.open_sealed(piece, [identity]))
    )


async def test_a_snapshot_holds_each_exporters_sealed_pieces_and_a_signed_manifest(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """Each piece is stored as exported and opens with the recovery identity; all is signed."""
    gateway = await exporter(Service.GATEWAY, pieces=2)
    scheduler = await exporter(Service.SCHEDULER, pieces=3)
    snap = await snapshotting()
    running = await snap.take()
    assert running.state == "running"
    done = await snap.finished(running.id)
    assert done.state == "completed", done.error
    assert [p.service for p in done.parts] == ["gateway", "scheduler"]

    folder = snap.folder(done.id)
    trusted = {await snap.signing_key()}
    manifest, problems = mf.verify_layout(folder, trusted)
    assert problems == []
    assert manifest.requested_by == "ops@example.com"
    assert manifest.recipients == [age.fingerprint(age.public_of(snap.identity))]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "gateway/000.age",
        "gateway/001.age",
        "manifest.json",
        "manifest.sig",
        "scheduler/000.age",
        "scheduler/001.age",
        "scheduler/002.age",
    ]
    for fake, part in ((gateway, "gateway"), (scheduler, "scheduler")):
        pieces = sorted((folder / part).iterdir())
        assert b"".join(opened(p.read_bytes(), snap.identity) for p in pieces) == fake.tar
        assert fake.released == [done.id]  # the exporters dropped their copies
    check = await snap.verify(done.id)
    assert (check.ok, check.problems, check.pieces_checked) == (True, [], 5)


async def test_each_host_of_a_per_host_service_is_a_part_of_its_own(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """Two log-shippers answer the fan-out: each is pulled from its own host, as `name@host`."""
    one = await exporter(Service.LOG_SHIPPER, host_id="node-1", pieces=2)
    two = await exporter(Service.LOG_SHIPPER, host_id="node-2", pieces=1)
    snap = await snapshotting(snapshot_exporters="log-shipper")
    done = await snap.finished((await snap.take()).id)
    assert done.state == "completed", done.error
    manifest, problems = mf.verify_layout(snap.folder(done.id), {await snap.signing_key()})
    assert problems == []
    assert [mf.part_name(p.service, p.host_id) for p in manifest.parts] == [
        "log-shipper@node-1",
        "log-shipper@node-2",
    ]
    assert one.released == two.released == [done.id]


async def test_a_second_request_while_one_runs_gets_the_running_one(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """One snapshot at a time: asking again while it runs answers that one."""
    gateway = await exporter(Service.GATEWAY)
    await exporter(Service.SCHEDULER)
    gateway.go.clear()
    snap = await snapshotting()
    first = await snap.take()
    await assert_eventually(lambda: _exported(gateway))
    second = await snap.take()
    assert second.id == first.id and second.state == "running"
    gateway.go.set()
    assert (await snap.finished(first.id)).state == "completed"
    assert gateway.exports == 1


def _exported(fake: FakeExporter) -> None:
    assert fake.exports == 1


async def test_a_service_that_is_down_fails_the_snapshot_and_leaves_no_manifest(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """No scheduler running: the snapshot fails naming it; the gateway's pieces are deleted."""
    gateway = await exporter(Service.GATEWAY)
    snap = await snapshotting()
    done = await snap.finished((await snap.take()).id)
    assert done.state == "failed"
    assert "scheduler did not answer" in done.error
    assert [p.name for p in snap.folder(done.id).rglob("*") if p.is_file()] == ["state.json"]
    assert gateway.released == [done.id]
    check = await snap.verify(done.id)
    assert not check.ok and "manifest.json: missing" in check.problems[0]


async def test_an_exporter_that_never_answers_fails_the_snapshot(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """An export that outlasts its timeout fails the snapshot with the service's name."""
    await exporter(Service.GATEWAY)
    scheduler = await exporter(Service.SCHEDULER)
    scheduler.go.clear()
    snap = await snapshotting(snapshot_export_timeout=1.0)
    done = await snap.finished((await snap.take()).id)
    assert done.state == "failed"
    assert "scheduler" in done.error and "did not export its state within 1 s" in done.error
    assert not (snap.folder(done.id) / mf.MANIFEST).exists()
    assert not list((snap.folder(done.id) / "gateway").glob("*"))


async def test_an_exporter_that_fails_fails_the_snapshot_with_its_reason(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """A per-host exporter's error is named with its host; nothing of the snapshot stays."""
    await exporter(Service.GATEWAY)
    await exporter(Service.LOG_SHIPPER, host_id="node-2", refuse="disk full")
    snap = await snapshotting(snapshot_exporters="gateway,log-shipper")
    done = await snap.finished((await snap.take()).id)
    assert done.state == "failed"
    assert "log-shipper (node-2) could not export its state: disk full" in done.error
    assert [p.name for p in snap.folder(done.id).rglob("*") if p.is_file()] == ["state.json"]


async def test_a_piece_damaged_on_the_way_fails_the_snapshot(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """What arrives is checked against the size and SHA-256 the exporter announced."""
    await exporter(Service.GATEWAY, damaged=True)
    snap = await snapshotting(snapshot_exporters="gateway")
    done = await snap.finished((await snap.take()).id)
    assert done.state == "failed"
    assert "gateway/000.age arrived with another size or SHA-256" in done.error
    assert [p.name for p in snap.folder(done.id).rglob("*") if p.is_file()] == ["state.json"]


async def test_without_recovery_recipients_a_snapshot_is_refused(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """Nobody could open it: refused with the setting to fix, nothing exported or stored."""
    gateway = await exporter(Service.GATEWAY)
    snap = await snapshotting(recovery_recipients="")
    with pytest.raises(RemoteInvalidRequest, match="SLIPWAY_RECOVERY_RECIPIENTS"):
        await snap.take()
    assert gateway.exports == 0
    assert await snap.listing() == []


async def test_old_snapshots_expire_and_manifests_chain(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """SLIPWAY_SNAPSHOT_KEEP=2: the third snapshot removes the first; each names the one before."""
    await exporter(Service.GATEWAY, pieces=1)
    snap = await snapshotting(snapshot_exporters="gateway", snapshot_keep=2)
    ids = []
    for _ in range(3):
        done = await snap.finished((await snap.take()).id)
        assert done.state == "completed", done.error
        ids.append(done.id)
    assert ids == sorted(ids)

    # Expiry follows the third snapshot's completion (recorded first): wait for it.
    async def expired() -> None:
        assert [s.id for s in await snap.listing()] == [ids[2], ids[1]]
        assert not snap.folder(ids[0]).exists()

    await assert_eventually(expired, timeout=10.0)
    second = (snap.folder(ids[1]) / mf.MANIFEST).read_bytes()
    third = mf.decode((snap.folder(ids[2]) / mf.MANIFEST).read_bytes())
    assert (third.previous, third.previous_sha256) == (ids[1], hashlib.sha256(second).hexdigest())
    assert mf.decode(second).previous == ids[0]


async def test_verify_names_a_flipped_byte_and_a_truncated_piece(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """The keyless check reads every stored piece back: a changed one is named."""
    await exporter(Service.GATEWAY, pieces=3)
    await exporter(Service.SCHEDULER, pieces=1)
    snap = await snapshotting()
    done = await snap.finished((await snap.take()).id)
    assert (await snap.verify(done.id)).ok
    flipped = snap.folder(done.id) / "gateway" / "001.age"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    cut = snap.folder(done.id) / "scheduler" / "000.age"
    cut.write_bytes(cut.read_bytes()[:-10])
    check = await snap.verify(done.id)
    assert not check.ok
    assert check.problems == [
        "gateway/001.age: its SHA-256 differs from the manifest's (altered)",
        f"scheduler/000.age: {len(cut.read_bytes())} bytes, the manifest says"
        f" {len(cut.read_bytes()) + 10} (truncated?)",
    ]


async def test_verify_refuses_a_manifest_signed_by_another_key(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """A manifest re-signed by a key the keyring does not hold is not trusted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    await exporter(Service.GATEWAY, pieces=1)
    snap = await snapshotting(snapshot_exporters="gateway")
    done = await snap.finished((await snap.take()).id)
    folder = snap.folder(done.id)
    forger = Ed25519PrivateKey.generate()
    body = (folder / mf.MANIFEST).read_bytes()
    forged = mf.Signature(
        public_key=forger.public_key().public_bytes_raw().hex(),
        signature=forger.sign(mf.signed_message(body)).hex(),
    )
    (folder / mf.SIGNATURE).write_bytes(msgspec.json.encode(forged))
    check = await snap.verify(done.id)
    assert not check.ok and "not by a key you trust" in check.problems[0]


async def test_the_keyring_signs_snapshot_manifests_for_the_backup_service_only(
    keyring_service: ServiceApp, bus_factory: Callable[[str], Awaitable[Bus]]
) -> None:
    """SNAPSHOT_MANIFEST_SIGN: the gateway is refused; the backup service gets a signature."""
    # Started now, after the keyring made its keys: one started before a key change is refused.
    now = datetime.now(UTC)
    manifest = mf.encode(
        mf.Manifest(
            id=f"s{now:%Y%m%dT%H%M%S}Z-3f9a",
            started_at=now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            finished_at=now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            recipients=[],
            parts=[],
        )
    )
    request = sc.SignSnapshotManifest(message=manifest)
    gateway = await bus_factory("gateway")
    with pytest.raises(RemoteForbidden):
        await gateway.call(sc.SNAPSHOT_MANIFEST_SIGN, request)
    backup = await bus_factory("backup")
    with pytest.raises(RemoteInvalidRequest, match="manifests only"):
        await backup.call(sc.SNAPSHOT_MANIFEST_SIGN, sc.SignSnapshotManifest(message=b"x\n{}"))
    signed = await backup.call(sc.SNAPSHOT_MANIFEST_SIGN, request)
    sig = mf.Signature(public_key=signed.public_key.hex(), signature=signed.signature.hex())
    assert mf.check_signature(manifest, msgspec.json.encode(sig), None) == signed.public_key.hex()


async def test_a_snapshot_during_a_master_key_rotation_is_not_signed(
    snapshotting: Start,
    exporter: Callable[..., Awaitable[FakeExporter]],
    keyring_service: ServiceApp,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """The keyring's part could hold keys its sealed master key does not open: it fails."""
    await exporter(Service.GATEWAY, pieces=1)
    rotator = keyring_service[ROTATOR]
    paused, go_on = asyncio.Event(), asyncio.Event()

    async def hold(step: str) -> None:
        if step == "key-recorded":
            paused.set()
            await go_on.wait()

    rotator.checkpoint = hold
    gateway = await bus_factory("gateway")
    rotation = asyncio.create_task(
        gateway.call(keyring.MASTERKEY_ROTATE, keyring.RotateMasterKey(), timeout=30.0)
    )
    try:
        await asyncio.wait_for(paused.wait(), 10.0)
        snap = await snapshotting(snapshot_exporters="gateway")
        done = await snap.finished((await snap.take()).id)
    finally:
        go_on.set()
        await rotation
    assert done.state == "failed"
    assert "master-key rotation ran while snapshot" in done.error
    assert not (snap.folder(done.id) / mf.MANIFEST).exists()
    # Asked again now the rotation is over: still refused, it ran while the snapshot did.
    body = mf.encode(
        mf.Manifest(
            id=done.id,
            started_at=done.started_at,
            finished_at=done.started_at,
            recipients=[],
            parts=[],
        )
    )
    backup = await bus_factory("backup")
    with pytest.raises(RemoteConflict):
        await backup.call(sc.SNAPSHOT_MANIFEST_SIGN, sc.SignSnapshotManifest(message=body))


async def test_the_taker_takes_scheduled_snapshots(
    snapshotting: Start, exporter: Callable[..., Awaitable[FakeExporter]]
) -> None:
    """SLIPWAY_SNAPSHOT_INTERVAL on the host named by SLIPWAY_SNAPSHOT_TAKER."""
    await exporter(Service.GATEWAY, pieces=1)
    snap = await snapshotting(
        snapshot_exporters="gateway", snapshot_interval=3600.0, schedule_check_seconds=0.2
    )

    async def scheduled() -> None:
        found = await snap.listing()
        assert [(s.kind, s.state) for s in found] == [("scheduled", "completed")]

    await assert_eventually(scheduled, timeout=30.0)


SNAP = "platform/snapshots/s20261203T101500Z-3f9a"


@pytest.mark.parametrize(
    "key",
    [
        "a/../b",
        "a1/notes.txt",
        f"{SNAP}/../x",
        f"{SNAP}/gateway/../000.age",
        f"{SNAP}/gateway@../000.age",
        f"{SNAP}/manifest.json.partial",
        f"{SNAP}/.hidden",
        f"{SNAP}/gateway/000.age/x",
    ],
)
async def test_snapshot_names_widen_the_keys_but_none_climbs_out(tmp_path: Path, key: str) -> None:
    """A snapshot's layout names are keys; nothing else with a dot, and no dot segment, is."""
    store = LocalFolder(tmp_path / "objects")
    await store.put(f"{SNAP}/log-shipper@node-2.lan/000.age", b"x")
    await store.put(f"{SNAP}/manifest.json", b"{}")
    assert await store.keys("platform/snapshots") == [
        f"{SNAP}/log-shipper@node-2.lan/000.age",
        f"{SNAP}/manifest.json",
    ]
    with pytest.raises(StorageError):
        await store.put(key, b"x")


async def test_a_snapshot_of_the_real_keyring_and_backup_service_restores_on_trial(
    nats_server: NatsServer,
    tmp_path: Path,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """With their own exporters: the dry restore opens every piece and the master key."""
    identity = age.generate_identity()
    recipient = age.format_recipient(age.public_of(identity))
    identity_file = tmp_path / "recovery.key"
    identity_file.write_text(age.format_identity(identity) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    keyring_app = create_keyring(
        KeyringSettings(
            nats_url=nats_server.url,
            home=str(home),
            shutdown_grace=5.0,
            recovery_recipients=recipient,
        )
    )
    keyring_task = await run_in_background(keyring_app)
    settings = BackupSettings(
        nats_url=nats_server.url,
        home=str(home),
        shutdown_grace=5.0,
        schedule_check_seconds=3600.0,
        backup_storage_dir=str(tmp_path / "objects"),
        recovery_recipients=recipient,
        snapshot_interval=0.0,
        snapshot_exporters="keyring,backup",
    )
    backup = create_backup(settings)
    backup_task = await run_in_background(backup)
    try:
        snap = Snapshotting(backup, settings, await bus_factory("operator"), identity)
        done = await snap.finished((await snap.take()).id)
        assert done.state == "completed", done.error
        assert [mf.part_name(p.service, p.host_id) for p in done.parts] == [
            "keyring",
            "backup@local",
        ]
        assert (await snap.verify(done.id)).ok
        report = dry_run(snap.folder(done.id), [identity_file], {done.signer})
        assert report.ok, report.lines()
        assert {row.part for row in report.counts} == {"keyring", "backup@local"}
    finally:
        await stop(backup, backup_task)
        await stop(keyring_app, keyring_task)
