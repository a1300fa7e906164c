"""pg:backups*, pg:promote and keys* against the real gateway, and pg:backups:open offline.

The objects `pg:backups:open` reads are made here in exactly the stored format
(contracts/backup.py, /work/shared backup design): a tar of a small data folder,
zstd-compressed as one stream, cut into parts each sealed with age; WAL pieces each
their own zstd frame, sealed; manifests signed (Ed25519) and hash-chained.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slipway.cli.auditpins import Pins
from slipway.cli.errors import CliError
from slipway.cli.main import run
from slipway.cli.registry import Context
from slipway.contracts import addons as ac
from slipway.contracts import keyring as kc
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from tests.addons.conftest import (  # noqa: F401 - fixtures
    BackupStack,
    addon_stack,
    backup_stack,
    postgres_image,
)
from tests.addons.test_postgresql import provisioned as real_provisioned
from tests.backup.test_backups import now_iso, sql, streamed_past
from tests.conftest import assert_eventually
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    Stack,
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)
from tests.gateway.test_backups_api import BackupDouble, backups, provisioned  # noqa: F401

SEGMENT = "000000010000000000000003"
WAL_SIZE = 16 * 1024 * 1024
OFFLINE_API = "http://offline.example"

Signer = Callable[[bytes], tuple[bytes, str, bytes]]  # message -> (signature, key_id, public)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def slipway(env: dict[str, str], cwd: Path, *argv: str) -> Result:
    """Run `slipway ARGV` in this process with its own streams, as `main` would."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = run(list(argv), Context(env=env, cwd=cwd, stdout=out, stderr=err))
    except CliError as exc:
        err.write(exc.message + "\n")
        code = exc.exit_code
    return Result(code, out.getvalue(), err.getvalue())


@dataclass
class Made:
    """A backup in the stored format: sealed objects and unsigned manifests."""

    team_id: str
    addon_id: str
    objects: dict[str, bytes] = field(default_factory=dict)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # what the tar holds
    wal: bytes = b""

    def info(self, key: str, kind: str, **extra: Any) -> dict[str, Any]:
        data = self.objects[key]
        found = {
            "key": key,
            "kind": kind,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "backup_num": 0,
            "part": 0,
            "segment": "",
            "offset": 0,
            "length": 0,
        }
        return {**found, **extra}

    def manifest(self, kind: str, objects: list[dict[str, Any]], **extra: Any) -> None:
        seq = len(self.manifests) + 1
        prev = hashlib.sha256(canonical(self.manifests[-1])).hexdigest() if self.manifests else ""
        self.manifests.append(
            {
                "format": "slipway-backup-manifest/1",
                "team_id": self.team_id,
                "addon_id": self.addon_id,
                "seq": seq,
                "prev": prev,
                "created_at": datetime.now(UTC).isoformat(),
                "kind": kind,
                "timeline": 1,
                "start_lsn": "0/3000028",
                "end_lsn": "0/3000100",
                "recipients": ["ab" * 32],
                "objects": objects,
                **extra,
            }
        )

    def signed(self, sign: Signer) -> dict[str, bytes]:
        """Every object, manifests included, as they are stored."""
        stored = dict(self.objects)
        for m in self.manifests:
            message = b"slipway-backup-manifest/1\n" + self.team_id.encode() + b"\n" + canonical(m)
            signature, key_id, public = sign(message)
            stored[f"{self.addon_id}/manifests/{m['seq']:08d}"] = json.dumps(
                {
                    "manifest": m,
                    "signature": base64.b64encode(signature).decode(),
                    "key_id": key_id,
                    "public_key": base64.b64encode(public).decode(),
                }
            ).encode()
        return stored


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _tar(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o600
            tar.addfile(member, io.BytesIO(data))
        for member in extra or []:
            tar.addfile(member)
    return buffer.getvalue()


def make_backup(
    team_id: str,
    addon_id: str,
    recipients: list[bytes],
    *,
    evil: list[tarfile.TarInfo] | None = None,
    wal_pieces: tuple[tuple[int, int], ...] = ((0, 5000), (5000, 3000)),
) -> Made:
    """Base backup 1 (two sealed parts + counts) and one WAL manifest of `wal_pieces`."""
    made = Made(team_id=team_id, addon_id=addon_id)
    made.files = {
        "PG_VERSION": b"15\n",
        "base/5/16384": os.urandom(20000),
        "pg_wal/000000010000000000000002": b"w" * 1000,
        "backup_manifest": b"{}",
    }
    compressed = zstandard.ZstdCompressor().compress(_tar(made.files, evil))
    half = len(compressed) // 2
    base_infos = []
    for part, piece in enumerate((compressed[:half], compressed[half:])):
        key = f"{addon_id}/base/000001/{part:05d}"
        made.objects[key] = age.seal(piece, recipients)
        base_infos.append(made.info(key, "base", backup_num=1, part=part))
    counts = f"{addon_id}/base/000001/counts"
    made.objects[counts] = age.seal(
        zstandard.ZstdCompressor().compress(b'{"public.items": 3}'), recipients
    )
    base_infos.append(made.info(counts, "counts", backup_num=1))
    made.manifest("base", base_infos, backup_num=1, size_bytes=len(made.files))
    made.wal = os.urandom(max(end + length for end, length in wal_pieces))
    wal_infos = []
    for offset, length in wal_pieces:
        key = f"{addon_id}/wal/00000001/{SEGMENT}/{offset:08X}"
        plain = made.wal[offset : offset + length]
        made.objects[key] = age.seal(zstandard.ZstdCompressor().compress(plain), recipients)
        wal_infos.append(made.info(key, "wal", segment=SEGMENT, offset=offset, length=length))
    made.manifest("wal", wal_infos)
    return made


@dataclass
class Offline:
    """A downloaded backup folder, pinned audit key and identity, ready for open."""

    env: dict[str, str]
    cwd: Path
    folder: Path
    identity: Path
    made: Made
    stored: dict[str, bytes]

    def open(self, *extra: str) -> Result:
        return slipway(
            self.env,
            self.cwd,
            "pg:backups:open",
            str(self.folder),
            "--identity",
            str(self.identity),
            "-o",
            str(self.cwd / "out"),
            *extra,
        )

    def write(self, key: str, data: bytes) -> None:
        path = self.folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def local_signer() -> tuple[Signer, str, bytes]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()

    def sign(message: bytes) -> tuple[bytes, str, bytes]:
        return key.sign(message), "audit-test-1", public

    return sign, "audit-test-1", public


def offline_folder(isolated: Path, made: Made, sign: Signer | None = None) -> Offline:
    signer, key_id, public = local_signer()
    env = {**os.environ}
    Pins.load(env, OFFLINE_API).save()
    pins = Pins.load(env, OFFLINE_API)
    pins.keys[key_id] = public.hex()
    pins.save()
    stored = made.signed(sign or signer)
    folder = isolated / "download"
    offline = Offline(env, isolated, folder, isolated / "id.txt", made, stored)
    for key, data in stored.items():
        offline.write(key, data)
    (folder / "slipway-backup.json").write_text(
        json.dumps({"api_url": OFFLINE_API, "backup": "b001", "to_time": ""})
    )
    return offline


@pytest.fixture
def customer(isolated: Path) -> bytes:
    identity = age.generate_identity()
    (isolated / "id.txt").write_text(f"# test key\n{age.format_identity(identity)}\n")
    return identity


def test_open_checks_everything_then_writes_data_wal_and_readme(
    isolated: Path, customer: bytes
) -> None:
    """Signed, chained, intact objects open into data/, wal/ and README.txt."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    offline = offline_folder(isolated, made)
    result = offline.open("--to-time", "2026-12-03T06:30:00+00:00")
    assert result.code == 0, result.err
    out = isolated / "out"
    for name, data in made.files.items():
        assert (out / "data" / name).read_bytes() == data
    segment = (out / "wal" / SEGMENT).read_bytes()
    assert len(segment) == WAL_SIZE
    assert segment[: len(made.wal)] == made.wal and not segment[len(made.wal) :].strip(b"\0")
    readme = (out / "README.txt").read_text()
    assert "recovery_target_time = '2026-12-03T06:30:00+00:00'" in readme
    assert f"postgres -D {out.resolve()}/data" in readme
    assert json.loads((out / "tables.json").read_text()) == {"public.items": 3}
    assert "2 signed manifests" in result.err


def test_a_flipped_byte_names_the_object_and_writes_nothing(
    isolated: Path, customer: bytes
) -> None:
    """One altered byte in a stored object: exit 1, the object named, no OUT."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    offline = offline_folder(isolated, made)
    key = "addon-1/base/000001/00001"
    flipped = bytearray(offline.stored[key])
    flipped[len(flipped) // 2] ^= 0x01
    offline.write(key, bytes(flipped))
    result = offline.open()
    assert result.code == 1
    assert key in result.err and "does NOT match" in result.err
    assert not (isolated / "out").exists()
    assert [p.name for p in isolated.iterdir() if p.name.startswith(".out")] == []


def test_a_bad_signature_is_refused(isolated: Path, customer: bytes) -> None:
    """A manifest edited after signing (here: its object's hash) fails its signature."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    offline = offline_folder(isolated, made)
    name = "addon-1/manifests/00000002"
    document = json.loads(offline.stored[name])
    document["manifest"]["objects"][0]["sha256"] = "00" * 32
    offline.write(name, json.dumps(document).encode())
    result = offline.open()
    assert result.code == 1
    assert name in result.err and "BAD SIGNATURE" in result.err
    assert not (isolated / "out").exists()


def test_an_unpinned_or_swapped_signing_key_is_refused(isolated: Path, customer: bytes) -> None:
    """A manifest signed by a key this CLI never pinned proves nothing, even if it verifies."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    stranger, _, _ = local_signer()  # another key under the same key id
    offline = offline_folder(isolated, made, sign=stranger)
    result = offline.open()
    assert result.code == 1 and "carries another public key" in result.err


def test_a_gap_in_the_manifest_chain_is_refused(isolated: Path, customer: bytes) -> None:
    """A missing manifest between two others breaks the chain, named by its seq."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    made.manifest("wal", [])  # seq 3
    offline = offline_folder(isolated, made)
    (offline.folder / "addon-1/manifests/00000002").unlink()
    result = offline.open()
    assert result.code == 1
    assert "GAP: seq 2 is missing" in result.err


def test_a_rewritten_chain_link_is_refused(isolated: Path, customer: bytes) -> None:
    """A manifest whose prev is not its predecessor's hash breaks the chain there."""
    made = make_backup("team-1", "addon-1", [age.public_of(customer)])
    made.manifests[1]["prev"] = "11" * 32
    result = offline_folder(isolated, made).open()
    assert result.code == 1 and "BROKEN at addon-1/manifests/00000002" in result.err


def test_a_gap_in_a_wal_segment_names_the_segment(isolated: Path, customer: bytes) -> None:
    """WAL pieces that leave bytes uncovered cannot be replayed past the gap."""
    made = make_backup(
        "team-1", "addon-1", [age.public_of(customer)], wal_pieces=((0, 4000), (5000, 100))
    )
    result = offline_folder(isolated, made).open()
    assert result.code == 1
    assert f"WAL segment {SEGMENT} has a GAP: bytes 4000 to 5000" in result.err
    assert not (isolated / "out").exists()


def test_the_wrong_identity_is_a_clear_error(isolated: Path, customer: bytes) -> None:
    """Objects sealed to another key: the error says so and nothing is written."""
    someone_else = age.generate_identity()
    made = make_backup("team-1", "addon-1", [age.public_of(someone_else)])
    result = offline_folder(isolated, made).open()
    assert result.code == 1
    assert "Cannot open addon-1/base/000001/00000 with the given identity" in result.err
    assert not (isolated / "out").exists()
    assert [p.name for p in isolated.iterdir() if p.name.startswith(".out")] == []


def test_a_tar_escaping_the_data_folder_is_refused(isolated: Path, customer: bytes) -> None:
    """A base backup whose tar climbs out (.., absolute, links) writes nothing outside."""
    link = tarfile.TarInfo("evil-link")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../escaped"
    climb = tarfile.TarInfo("../escaped.txt")
    for evil in (link, climb):
        made = make_backup("team-1", "addon-1", [age.public_of(customer)], evil=[evil])
        result = offline_folder(isolated, made).open()
        assert result.code == 1, result.err
        assert "does not unpack" in result.err
        assert not (isolated / "out").exists()
        assert not (isolated / "escaped.txt").exists()


# ---- against the gateway ---------------------------------------------------------------------


def _env(running: Stack, token: str | None, app: str) -> dict[str, str]:
    return {
        **os.environ,
        "SLIPWAY_API_URL": running.url,
        "SLIPWAY_API_KEY": token or "",
        "SLIPWAY_APP": app,
    }


async def test_list_capture_info_download_and_open_with_real_signatures(
    stack: Stack,  # noqa: F811 - the fixtures imported above
    backups: BackupDouble,  # noqa: F811
    bus_factory: Callable[[str], Awaitable[Bus]],
    isolated: Path,
    customer: bytes,
) -> None:
    """The CLI lists, captures and shows backups; download + open round-trips real manifests."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    env = _env(stack, alice.token, "hello")

    made = make_backup(app["team"]["id"], db["id"], [age.public_of(customer)])
    as_backup = await bus_factory("backup")
    stored = dict(made.objects)
    for m in made.manifests:
        message = kc.MANIFEST_PREFIX + made.team_id.encode() + b"\n" + canonical(m)
        signed = await as_backup.call(
            kc.BACKUP_MANIFEST_SIGN, kc.SignManifest(team_id=made.team_id, message=message)
        )
        stored[f"{db['id']}/manifests/{m['seq']:08d}"] = json.dumps(
            {
                "manifest": m,
                "signature": base64.b64encode(signed.signature).decode(),
                "key_id": signed.key_id,
                "public_key": base64.b64encode(signed.public_key).decode(),
            }
        ).encode()
    backups.objects.update(stored)
    backups.add(db["id"], ended=datetime.now(UTC))

    listed = await asyncio.to_thread(slipway, env, isolated, "pg:backups")
    assert listed.code == 0, listed.err
    assert "b001" in listed.out and "Completed" in listed.out and "Streaming" in listed.out
    taken = await asyncio.to_thread(slipway, env, isolated, "pg:backups:capture")
    assert taken.code == 0, taken.err
    assert taken.out.startswith(f"b002 of {db['name']}: Completed")
    assert "Backing up" in taken.err and "done" in taken.err
    shown = await asyncio.to_thread(slipway, env, isolated, "pg:backups:info", "b001")
    assert shown.code == 0 and "0/2000028 - 0/2000100" in shown.out

    async def audit_key_listed() -> None:
        assert await alice.ok("GET", "/audit/keys")

    await assert_eventually(audit_key_listed)
    folder = isolated / "dl"
    got = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:download", "b001", "-o", str(folder)
    )
    assert got.code == 0, got.err
    assert "Pinned audit key" in got.err and "100%" in got.err
    for key, data in stored.items():
        assert (folder / key).read_bytes() == data
    opened = await asyncio.to_thread(
        slipway,
        env,
        isolated,
        "pg:backups:open",
        str(folder),
        "--identity",
        str(isolated / "id.txt"),
    )
    assert opened.code == 0, opened.err
    out = Path(opened.out.strip())
    assert (out / "data" / "PG_VERSION").read_bytes() == b"15\n"
    assert (out / "wal" / SEGMENT).stat().st_size == WAL_SIZE

    viewer = await stack.user("vera@example.com")
    await stack.join(alice, "alice", viewer, "viewer")
    refused = await asyncio.to_thread(
        slipway, _env(stack, viewer.token, "hello"), isolated, "pg:backups:download", "b001"
    )
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1].endswith("(viewer) cannot download backups.")


async def test_restore_promote_and_keys(
    stack: Stack,  # noqa: F811 - the fixtures imported above
    backups: BackupDouble,  # noqa: F811
    isolated: Path,
) -> None:
    """restore makes a new add-on, promote swaps DATABASE_URL, keys manage the team's keys."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    backups.add(db["id"], ended=datetime.now(UTC))
    env = _env(stack, alice.token, "hello")

    made = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:restore", "b001", "--as", "hello-copy", "--no-wait"
    )
    assert made.code == 0, made.err
    assert made.out.strip() == "hello-copy (postgresql:mini) is provisioning"
    copy = await alice.ok("GET", "/apps/hello/addons/hello-copy")
    await stack.bus.publish(
        ac.ADDON_CHANGED,
        ac.AddonChanged(
            addon_id=copy["id"], app_id=copy["app"]["id"], state="provisioned", host_id="h"
        ),
    )

    async def ready() -> None:
        assert (await alice.ok("GET", "/apps/hello/addons/hello-copy"))["state"] == "provisioned"

    await assert_eventually(ready)
    promoted = await asyncio.to_thread(slipway, env, isolated, "pg:promote", "hello-copy")
    assert promoted.code == 0, promoted.err
    attachments = await alice.ok("GET", "/apps/hello/addon-attachments")
    assert {a["addon"]["name"]: a["name"] for a in attachments}["hello-copy"] == "DATABASE"
    wrong = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:restore", "b009", "--as", "nope", "--addon", db["id"]
    )
    assert wrong.code == 1 and "no completed backup b009" in wrong.err

    identity = age.generate_identity()
    (isolated / "key.txt").write_text(age.format_identity(identity) + "\n")
    added = await asyncio.to_thread(
        slipway, env, isolated, "keys:add", "key.txt", "--label", "laptop"
    )
    assert added.code == 0, added.err
    recipient = age.format_recipient(age.public_of(identity))
    assert recipient in added.out and age.format_identity(identity) not in added.out
    off = await asyncio.to_thread(slipway, env, isolated, "keys:platform", "--off")
    assert off.code == 0 and "OFF" in off.out
    fingerprint = age.fingerprint(age.public_of(identity))
    removed = await asyncio.to_thread(slipway, env, isolated, "keys:remove", fingerprint[:16])
    # The keyring refuses to leave a team with no key at all: the platform key is off.
    assert removed.code == 1 and removed.err.strip()
    on = await asyncio.to_thread(slipway, env, isolated, "keys:platform", "--on", "-t", "alice")
    assert on.code == 0
    removed = await asyncio.to_thread(slipway, env, isolated, "keys:remove", fingerprint[:16])
    assert removed.code == 0, removed.err
    listed = await asyncio.to_thread(slipway, env, isolated, "keys", "--json")
    assert [k["kind"] for k in json.loads(listed.out)["keys"]] == ["platform"]


# ---- a real backup, opened where the platform cannot: the customer's machine -------------------


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_customer_only_backup_opens_offline_into_a_running_postgresql(
    backup_stack: BackupStack,  # noqa: F811 - the fixture imported above
    postgres_image: str,  # noqa: F811
    isolated: Path,
) -> None:
    """Sealed to the customer's key only: download + open + README's steps give the rows."""
    running = backup_stack.addons.stack
    alice = await running.user("alice@example.com")
    app = await running.app(alice, "offline")
    env = _env(running, alice.token, "offline")
    identity = age.generate_identity()
    (isolated / "id.txt").write_text(age.format_identity(identity) + "\n")
    (isolated / "other.txt").write_text(age.format_identity(age.generate_identity()) + "\n")
    recipient = age.format_recipient(age.public_of(identity))
    for argv in (("keys:add", recipient), ("keys:platform", "--off")):
        done = await asyncio.to_thread(slipway, env, isolated, *argv)
        assert done.code == 0, done.err
    addon = await real_provisioned(alice, "offline")
    url = (await alice.ok("GET", "/apps/offline/config-vars"))["DATABASE_URL"]
    await sql(backup_stack.addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    taken = await asyncio.to_thread(slipway, env, isolated, "pg:backups:capture")
    assert taken.code == 0, taken.err
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (2)")
    await streamed_past(alice, "offline", addon["name"], now_iso())

    got = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:download", "-o", str(isolated / "dl")
    )
    assert got.code == 0, got.err
    wrong = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:open", "dl", "-i", "other.txt", "-o", "wrong"
    )
    assert wrong.code == 1 and "with the given identity" in wrong.err
    assert not (isolated / "wrong").exists()
    opened = await asyncio.to_thread(
        slipway, env, isolated, "pg:backups:open", "dl", "-i", "id.txt", "-o", str(isolated / "o")
    )
    assert opened.code == 0, opened.err

    out = (isolated / "o").resolve()
    readme = (out / "README.txt").read_text()
    steps = readme[readme.index("  chmod") : readme.index("EOF\n  postgres") + 4]
    database = url.rsplit("/", 1)[1].split("?")[0]
    rows, recovering = "select n from t order by n", "select pg_is_in_recovery()"
    pg_ctl = (
        f"/usr/lib/postgresql/15/bin/pg_ctl -D {out}/data -w -t 60 -l {out}/log -o"
        ' "-c listen_addresses= -c unix_socket_directories=/tmp -c archive_mode=off" start'
    )
    script = (
        f"set -e; {steps}\n chown -R postgres {out}; su postgres -c '{pg_ctl}' >/dev/null;"
        f" for i in $(seq 60); do su postgres -c \"psql -h /tmp -XAtc '{recovering}'\""
        " | grep -q f && break; sleep 0.5; done;"
        f" su postgres -c \"psql -h /tmp -d {database} -XAtc '{rows}'\""
    )
    ran = await asyncio.to_thread(
        subprocess.run,
        ["docker", "run", "--rm", "--user", "root", "--log-driver", "none", "-v", f"{out}:{out}",
         "--entrypoint", "sh", postgres_image, "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["1", "2"]
