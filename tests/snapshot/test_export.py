"""A service's state exported as sealed pieces, through the bus, and what the pieces hold."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import zstandard

from slipway.contracts.snapshot import (
    SNAPSHOT_EXPORT,
    SNAPSHOT_PIECE_READ,
    SNAPSHOT_RELEASE,
    ExportedState,
    ExportState,
    ReadPiece,
    ReleaseExport,
)
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.libs.errors import Forbidden, InvalidRequest, NotFound
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp, Settings
from slipway.libs.service.snapshots import Exporter
from slipway.libs.snapshot.export import Database, File, Folder, Sources, export
from slipway.libs.snapshot.manifest import MASTER_KEY_MEMBER
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.registry_proxy.snapshot import Selection, kept_images
from slipway.services.registry_proxy.store import Release, Store
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    gateway_service,
    keyring_service,
    run_in_background,
    slipway_home,
    stop,
)

pytestmark = pytest.mark.integration

BusFactory = Callable[[str], Awaitable[Bus]]
SNAPSHOT = "s20261203T101500Z-3f9a"


@pytest.fixture
def identity() -> bytes:
    return age.generate_identity()


@pytest.fixture
def recipient(identity: bytes) -> str:
    return age.format_recipient(age.public_of(identity))


def make_state(home: Path) -> tuple[Path, Path]:
    """A database with two apps (schema version 7) and a folder of two files."""
    state = home / "scheduler"
    state.mkdir(parents=True)
    db = state / "scheduler.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE apps (id TEXT PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO apps VALUES (?, ?)", [("a1", "hello"), ("a2", "world")])
        conn.execute("PRAGMA user_version=7")
    conn.close()
    things = state / "things"
    (things / "sub").mkdir(parents=True)
    (things / "a.txt").write_bytes(b"first file")
    (things / "sub" / "b.bin").write_bytes(os.urandom(3000))
    return db, things


@pytest.fixture
async def exporter(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ServiceApp]:
    """A service (as the scheduler) that declares a database and a folder."""
    home = tmp_path / "home"
    db, things = make_state(home)
    service = ServiceApp(
        Service.SCHEDULER,
        settings=Settings(nats_url=nats_server.url, home=str(home), shutdown_grace=5.0),
    )
    service.snapshot_sources = lambda: Sources(
        databases=[Database(db, "scheduler/scheduler.db")],
        folders=[Folder(things, "scheduler/things/")],
        left_out=["scheduler: running containers"],
    )
    task = await run_in_background(service)
    yield service
    await stop(service, task)


async def export_as(bus: Bus, service: Service, recipient: str) -> ExportedState:
    found = await bus.gather(
        SNAPSHOT_EXPORT[service],
        ExportState(snapshot_id=SNAPSHOT, recipients=[recipient]),
        timeout=30,
    )
    assert not found.errors, found.errors
    (exported,) = found.replies.values()
    return exported


async def pull(bus: Bus, service: Service, exported: ExportedState) -> list[bytes]:
    """Every sealed piece, read chunk by chunk the way the backup service does."""
    pieces = []
    for piece in exported.pieces:
        data = b""
        while True:
            request = ReadPiece(
                snapshot_id=SNAPSHOT,
                service=str(service),
                host_id=exported.host_id,
                piece=piece.name,
                offset=len(data),
                length=1000,
            )
            found = await bus.gather(SNAPSHOT_PIECE_READ[service], request)
            assert not found.errors, found.errors
            (chunk,) = found.replies.values()
            data += chunk.data
            if chunk.eof:
                break
        assert len(data) == piece.size
        assert hashlib.sha256(data).hexdigest() == piece.sha256
        pieces.append(data)
    return pieces


def open_pieces(pieces: list[bytes], identity: bytes) -> bytes:
    """The tar: each piece opened with the identity, decompressed, concatenated."""
    unzip = zstandard.ZstdDecompressor()
    return b"".join(unzip.decompress(age.open_sealed(p, [identity])) for p in pieces)


def members(tar_bytes: bytes) -> dict[str, bytes | None]:
    """Each member's content (None for a folder)."""
    found: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r|") as tar:
        for info in tar:
            assert info.isfile() or info.isdir(), info.name
            file = tar.extractfile(info) if info.isfile() else None
            found[info.name] = file.read() if file else None
    return found


async def test_an_export_through_the_bus_holds_the_rows_and_files(
    exporter: ServiceApp, bus_factory: BusFactory, identity: bytes, recipient: str, tmp_path: Path
) -> None:
    """The backup user exports, reads and releases the pieces; they hold the rows and files."""
    backup = await bus_factory("backup")
    exported = await export_as(backup, Service.SCHEDULER, recipient)
    assert (exported.service, exported.host_id) == ("scheduler", "")
    assert exported.counts == {"scheduler.db:apps": 2, "scheduler/things:files": 2}
    assert exported.schema == {"scheduler.db": 7}
    assert exported.left_out == ["scheduler: running containers"]
    folder = tmp_path / "home" / "scheduler" / "snapshot-out" / SNAPSHOT
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    tar = open_pieces(await pull(backup, Service.SCHEDULER, exported), identity)
    assert len(tar) == exported.plain_bytes
    found = members(tar)
    assert found["scheduler/things/a.txt"] == b"first file"
    things = tmp_path / "home" / "scheduler" / "things"
    assert found["scheduler/things/sub/b.bin"] == (things / "sub" / "b.bin").read_bytes()
    copy = tmp_path / "copy.db"
    copy.write_bytes(found["scheduler/scheduler.db"] or b"")
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT id, name FROM apps ORDER BY id").fetchall() == [
            ("a1", "hello"),
            ("a2", "world"),
        ]
    conn.close()

    released = await backup.gather(
        SNAPSHOT_RELEASE[Service.SCHEDULER], ReleaseExport(snapshot_id=SNAPSHOT)
    )
    assert released.replies and not released.errors
    assert not folder.exists()
    again = await backup.gather(
        SNAPSHOT_PIECE_READ[Service.SCHEDULER],
        ReadPiece(snapshot_id=SNAPSHOT, service="scheduler", piece="000.age"),
    )
    (error,) = again.errors.values()
    assert isinstance(error, NotFound)


async def test_a_caller_other_than_backup_is_refused(
    exporter: ServiceApp, bus_factory: BusFactory, recipient: str, tmp_path: Path
) -> None:
    """The gateway may not export, read or release: each is refused naming the backup service."""
    gateway = await bus_factory("gateway")
    requests = [
        (SNAPSHOT_EXPORT, ExportState(snapshot_id=SNAPSHOT, recipients=[recipient])),
        (
            SNAPSHOT_PIECE_READ,
            ReadPiece(snapshot_id=SNAPSHOT, service="scheduler", piece="000.age"),
        ),
        (SNAPSHOT_RELEASE, ReleaseExport(snapshot_id=SNAPSHOT)),
    ]
    for rpcs, request in requests:
        found = await gateway.gather(rpcs[Service.SCHEDULER], request)  # type: ignore[index]
        assert not found.replies
        (error,) = found.errors.values()
        assert isinstance(error, Forbidden)
        assert "only backup may" in str(error)
    assert not (tmp_path / "home" / "scheduler" / "snapshot-out" / SNAPSHOT).exists()


async def test_a_symlink_in_a_folder_is_not_followed(
    tmp_path: Path, identity: bytes, recipient: str
) -> None:
    """Links to /etc/shadow, to a secret file and to a folder are skipped and listed."""
    folder = tmp_path / "repos"
    folder.mkdir()
    (folder / "kept.txt").write_bytes(b"kept")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"secret-outside-" + os.urandom(8).hex().encode()
    (outside / "secret.txt").write_bytes(secret)
    (folder / "shadow").symlink_to("/etc/shadow")
    (folder / "secret").symlink_to(outside / "secret.txt")
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    done = await export(
        Sources(folders=[Folder(folder, "gateway/repos/")]),
        [age.parse_recipient(recipient)],
        tmp_path / "out",
    )
    pieces = [(tmp_path / "out" / p.name).read_bytes() for p in done.pieces]
    tar = open_pieces(pieces, identity)
    assert secret not in tar
    assert Path("/etc/shadow").read_bytes() not in tar
    assert set(members(tar)) == {"gateway/repos/kept.txt"}
    assert done.counts == {"gateway/repos:files": 1}
    for name in ("elsewhere", "secret", "shadow"):
        assert f"gateway/repos/{name}: a symbolic link, not exported" in done.left_out


async def test_pieces_are_cut_at_the_piece_size(
    tmp_path: Path, identity: bytes, recipient: str
) -> None:
    """Each piece holds at most piece_size tar bytes; together they are the whole tar."""
    folder = tmp_path / "data"
    folder.mkdir()
    blob = os.urandom(20_000)
    (folder / "blob").write_bytes(blob)
    done = await export(
        Sources(folders=[Folder(folder, "data/")]),
        [age.parse_recipient(recipient)],
        tmp_path / "out",
        piece_size=4096,
    )
    assert [p.name for p in done.pieces][:3] == ["000.age", "001.age", "002.age"]
    plain = [
        zstandard.ZstdDecompressor().decompress(
            age.open_sealed((tmp_path / "out" / p.name).read_bytes(), [identity])
        )
        for p in done.pieces
    ]
    assert all(len(p) == 4096 for p in plain[:-1]) and 0 < len(plain[-1]) <= 4096
    assert members(b"".join(plain)) == {"data/blob": blob}


# ---- the keyring ----------------------------------------------------------------------------


@pytest.fixture
async def keyring(
    nats_server: NatsServer, tmp_path: Path, recipient: str
) -> AsyncIterator[KeyringSettings]:
    settings = KeyringSettings(
        nats_url=nats_server.url,
        home=str(tmp_path / "home"),
        shutdown_grace=5.0,
        recovery_recipients=recipient,
    )
    service = create_keyring(settings)
    task = await run_in_background(service)
    yield settings
    await stop(service, task)


async def test_the_keyring_part_never_holds_the_master_key(
    keyring: KeyringSettings, bus_factory: BusFactory, identity: bytes, recipient: str
) -> None:
    """The part holds the database and the sealed key; the master key's bytes are nowhere."""
    backup = await bus_factory("backup")
    exported = await export_as(backup, Service.KEYRING, recipient)
    tar = open_pieces(await pull(backup, Service.KEYRING, exported), identity)
    master = keyring.master_key_file().read_bytes()
    assert len(master) == 32
    assert master not in tar
    found = members(tar)
    assert set(found) == {"keyring/keyring.db", MASTER_KEY_MEMBER}
    assert age.open_sealed(found[MASTER_KEY_MEMBER] or b"", [identity]) == master
    assert exported.schema["keyring.db"] > 0


async def test_the_keyring_refuses_a_snapshot_nobody_could_open(
    nats_server: NatsServer, tmp_path: Path, bus_factory: BusFactory, recipient: str
) -> None:
    """Without recovery recipients the export fails, naming SLIPWAY_RECOVERY_RECIPIENTS."""
    settings = KeyringSettings(
        nats_url=nats_server.url, home=str(tmp_path / "home"), shutdown_grace=5.0
    )
    service = create_keyring(settings)
    task = await run_in_background(service)
    try:
        backup = await bus_factory("backup")
        found = await backup.gather(
            SNAPSHOT_EXPORT[Service.KEYRING],
            ExportState(snapshot_id=SNAPSHOT, recipients=[recipient]),
            timeout=30,
        )
    finally:
        await stop(service, task)
    (error,) = found.errors.values()
    assert "SLIPWAY_RECOVERY_RECIPIENTS" in str(error)
    assert not (tmp_path / "home" / "keyring" / "snapshot-out" / SNAPSHOT).exists()


# ---- the registry ---------------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def put_blob(storage: Path, data: bytes) -> str:
    digest = digest_of(data)
    hexa = digest.removeprefix("sha256:")
    path = storage / "docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def put_link(storage: Path, relative: str, digest: str) -> None:
    path = storage / "docker/registry/v2/repositories/apps/a1" / relative / "link"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)


def push_image(storage: Path, shared: str, tag: str) -> tuple[str, set[str]]:
    """An OCI image (config, its own layer and a shared one) in Distribution's layout."""
    config = put_blob(storage, json.dumps({"tag": tag}).encode())
    layer = put_blob(storage, os.urandom(500))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": config, "size": 1},
            "layers": [{"digest": layer, "size": 500}, {"digest": shared, "size": 10}],
        }
    ).encode()
    digest = put_blob(storage, manifest)
    for blob in (config, layer, shared):
        put_link(storage, f"_layers/sha256/{blob.removeprefix('sha256:')}", blob)
    put_link(storage, f"_manifests/revisions/sha256/{digest.removeprefix('sha256:')}", digest)
    put_link(storage, f"_manifests/tags/{tag}/current", digest)
    put_link(
        storage, f"_manifests/tags/{tag}/index/sha256/{digest.removeprefix('sha256:')}", digest
    )
    return digest, {config, layer, digest}


async def test_the_registry_part_holds_only_kept_blobs(
    tmp_path: Path, identity: bytes, recipient: str
) -> None:
    """With a rollback window of 2, v1's own blobs stay out; v2, v3 and a recent push are in.

    The recent push names a layer `sha256:../../x`: a digest that is no digest names no path.
    """
    storage = tmp_path / "registry"
    shared = put_blob(storage, b"shared layer")
    images = [push_image(storage, shared, f"v{n}") for n in (1, 2, 3)]
    hostile = put_blob(storage, json.dumps({"layers": [{"digest": "sha256:../../x"}]}).encode())
    store = await Store.open(tmp_path / "registry-proxy.db")
    try:
        async with store.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO images (app_id, digest, tag, pushed_at) VALUES ('a1', ?, ?, ?)",
                [(d, f"v{n}", 1.0) for n, (d, _) in enumerate(images, 1)]
                + [(hostile, "next", time.time())],  # not released yet: kept a while
            )
        for n, (digest, _) in enumerate(images, 1):
            await store.record_release(Release(f"r{n}", "a1", n, digest))
        kept = await kept_images(store, keep=2, grace=3600)
    finally:
        await store.close()
    assert kept == {"a1": {images[1][0], images[2][0], hostile}}
    selection = await asyncio.to_thread(Selection.of, storage, kept)
    done = await export(
        Sources(folders=[Folder(storage, "registry/", filter=selection.wants)]),
        [age.parse_recipient(recipient)],
        tmp_path / "out",
    )
    tar = open_pieces([(tmp_path / "out" / p.name).read_bytes() for p in done.pieces], identity)
    blobs = {
        "sha256:" + name.split("/")[-2]
        for name, content in members(tar).items()
        if content is not None and name.endswith("/data")
    }
    assert blobs == images[1][1] | images[2][1] | {shared, hostile}
    names = set(members(tar))
    v1 = images[0][0].removeprefix("sha256:")
    assert not any(v1 in name for name in names)
    assert not any("/tags/v1/" in name for name in names)
    repo = "registry/docker/registry/v2/repositories/apps/a1/_manifests"
    assert f"{repo}/tags/v3/current/link" in names


# ---- the exporter's own rules ----------------------------------------------------------------


def host_exporter(tmp_path: Path) -> Exporter:
    """A per-host exporter (as the log-shipper of host-1) of one small file."""
    (tmp_path / "f").write_bytes(b"x")
    return Exporter(
        Service.LOG_SHIPPER,
        tmp_path / "log-shipper",
        lambda: Sources(files=[File(tmp_path / "f", "log-shipper/f")]),
        host_id="host-1",
    )


async def test_an_unsafe_snapshot_id_is_refused(tmp_path: Path, recipient: str) -> None:
    """An id that is not letters, digits and dashes names no folder: nothing is written."""
    exporter = host_exporter(tmp_path)
    for bad in ("../../etc", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(InvalidRequest, match="not a snapshot id"):
            await exporter.export(ExportState(snapshot_id=bad, recipients=[recipient]))
    assert not (tmp_path / "log-shipper").exists()


async def test_a_per_host_exporter_answers_only_for_its_host(
    tmp_path: Path, recipient: str
) -> None:
    """Reads and releases naming another host get no answer; names it never wrote, NotFound."""
    exporter = host_exporter(tmp_path)
    exported = await exporter.export(ExportState(snapshot_id=SNAPSHOT, recipients=[recipient]))
    assert exported.host_id == "host-1"
    folder = tmp_path / "log-shipper" / "snapshot-out" / f"{SNAPSHOT}@host-1"
    assert [p.name for p in exported.pieces] == sorted(os.listdir(folder))

    def read(host: str, piece: str = "000.age") -> ReadPiece:
        return ReadPiece(snapshot_id=SNAPSHOT, service="log-shipper", host_id=host, piece=piece)

    assert await exporter.read(read("host-2")) is None
    chunk = await exporter.read(read("host-1"))
    assert chunk is not None and chunk.eof and len(chunk.data) == exported.pieces[0].size
    with pytest.raises(NotFound):
        await exporter.read(read("host-1", "../../../f"))  # tmp_path/f
    assert await exporter.release(ReleaseExport(snapshot_id=SNAPSHOT, host_id="host-2")) is None
    assert folder.exists()
    assert await exporter.release(ReleaseExport(snapshot_id=SNAPSHOT, host_id="host-1"))
    assert not folder.exists()


async def test_no_recipient_is_refused(tmp_path: Path) -> None:
    """An export sealed to nobody is refused, naming SLIPWAY_RECOVERY_RECIPIENTS."""
    exporter = host_exporter(tmp_path)
    with pytest.raises(InvalidRequest, match="SLIPWAY_RECOVERY_RECIPIENTS"):
        await exporter.export(ExportState(snapshot_id=SNAPSHOT, recipients=[]))


def test_export_folders_older_than_a_day_are_swept(tmp_path: Path) -> None:
    """A folder a snapshot never released goes once a day old; a recent one stays."""
    exporter = host_exporter(tmp_path)
    old, recent = exporter.root / "s-old@host-1", exporter.root / "s-new@host-1"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "000.age").write_bytes(b"sealed")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert exporter.sweep() == ["s-old@host-1"]
    assert not old.exists() and recent.exists()


async def test_the_real_gateway_exports_its_database_and_repositories(
    gateway_service: ServiceApp,  # noqa: F811 - the fixture
    slipway_home: Path,  # noqa: F811 - the fixture
    bus_factory: BusFactory,
    identity: bytes,
    recipient: str,
) -> None:
    """The gateway as it runs: its database (the bootstrap admin's team) and its git repos."""
    repo = slipway_home / "gateway" / "repos" / "a1.git"
    (repo / "refs").mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    backup = await bus_factory("backup")
    exported = await export_as(backup, Service.GATEWAY, recipient)
    assert exported.counts["gateway.db:teams"] >= 1
    assert exported.counts["gateway/repos:files"] == 1
    assert exported.schema["gateway.db"] > 0
    found = members(open_pieces(await pull(backup, Service.GATEWAY, exported), identity))
    assert found["gateway/repos/a1.git/HEAD"] == b"ref: refs/heads/main\n"
    assert "gateway/gateway.db" in found
    assert not any("bootstrap" in name for name in found)  # the admin's first token stays out
