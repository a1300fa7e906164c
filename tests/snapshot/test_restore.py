"""Restoring a platform from a snapshot: a good one comes back whole, a bad one changes nothing.

The snapshots are written here by a small writer of the test's own (tar, zstd, age,
pieces, a manifest signed with Ed25519), so that every way of damaging one can be made.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import replace

from slipway.contracts.snapshot import FORMAT, PartInfo, Piece
from slipway.libs.crypto import age
from slipway.libs.snapshot import manifest as layout
from slipway.libs.snapshot.restore import RESTORED, RestoreRefused, dry_run, main, restore

ROOT = Path(__file__).resolve().parents[2]
PIECE_SIZE = 4096  # small, so that every part has several pieces


# ---- a snapshot writer of the test's own --------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One tar member: a file (data), a folder, or something a restore must refuse."""

    name: str
    data: bytes = b""
    kind: str = "file"  # file, dir, symlink, hardlink, fifo, chr
    mode: int = 0o644
    link: str = ""


@dataclass
class Part:
    service: str
    members: list[Member]
    host_id: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


def tar_of(members: list[Member]) -> bytes:
    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = types[member.kind]
            info.mode = member.mode
            info.mtime = 1_700_000_000
            info.linkname = member.link
            if member.kind == "file":
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def write_part(folder: Path, part: Part, recipients: list[bytes]) -> PartInfo:
    """The part's tar cut into pieces, each age(zstd(piece)), as the exporters write them."""
    tar = tar_of(part.members)
    where = folder / layout.part_name(part.service, part.host_id)
    where.mkdir(parents=True)
    pieces = []
    for number, start in enumerate(range(0, len(tar), PIECE_SIZE)):
        sealed = age.seal(
            zstandard.ZstdCompressor().compress(tar[start : start + PIECE_SIZE]), recipients
        )
        name = f"{number:03d}.age"
        (where / name).write_bytes(sealed)
        pieces.append(Piece(name=name, size=len(sealed), sha256=hashlib.sha256(sealed).hexdigest()))
    return PartInfo(
        service=part.service,
        host_id=part.host_id,
        pieces=pieces,
        plain_bytes=len(tar),
        counts=part.counts,
        left_out=part.left_out,
    )


def sign(folder: Path, manifest_bytes: bytes, key: Ed25519PrivateKey) -> None:
    signature = layout.Signature(
        public_key=key.public_key().public_bytes_raw().hex(),
        signature=key.sign(layout.signed_message(manifest_bytes)).hex(),
    )
    (folder / layout.MANIFEST).write_bytes(manifest_bytes)
    (folder / layout.SIGNATURE).write_bytes(msgspec.json.encode(signature))


def database(tables: dict[str, int], tmp: Path) -> bytes:
    """A real SQLite database's bytes with `rows` rows in each table."""
    path = tmp / f"db-{os.urandom(4).hex()}.db"
    with sqlite3.connect(path) as conn:
        for table, rows in tables.items():
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany(
                f"INSERT INTO {table} (v) VALUES (?)",  # noqa: S608 - the test's own names
                [(str(i),) for i in range(rows)],
            )
    conn.close()
    data = path.read_bytes()
    path.unlink()
    return data


@dataclass
class Keys:
    identity: bytes
    identity_file: Path
    signer: Ed25519PrivateKey
    master_key: bytes

    @property
    def recipient(self) -> bytes:
        return age.public_of(self.identity)

    @property
    def signer_hex(self) -> str:
        return self.signer.public_key().public_bytes_raw().hex()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    identity = age.generate_identity()
    identity_file = tmp_path / "recovery.key"
    identity_file.write_text(f"# recovery\n{age.format_identity(identity)}\n")
    identity_file.chmod(0o600)
    return Keys(identity, identity_file, Ed25519PrivateKey.generate(), os.urandom(32))


def platform_parts(keys: Keys, tmp: Path) -> list[Part]:
    """A small platform: a gateway with a database and a git repository, a keyring, two hosts."""
    repo = "gateway/repos/a1.git"
    return [
        Part(
            "gateway",
            [
                Member("gateway/gateway.db", database({"apps": 2, "teams": 1}, tmp)),
                Member("gateway/repos", kind="dir", mode=0o755),
                Member(f"{repo}", kind="dir", mode=0o755),
                Member(f"{repo}/HEAD", b"ref: refs/heads/main\n"),
                Member(f"{repo}/hooks/post-receive", b"#!/bin/sh\nexit 0\n", mode=0o4755),
                Member(f"{repo}/objects/pack/p.pack", os.urandom(20000)),
            ],
            counts={"gateway.db:apps": 2, "gateway.db:teams": 1, "gateway/repos:files": 3},
            left_out=["sources not yet built: push them again"],
        ),
        Part(
            "keyring",
            [
                Member("keyring/keyring.db", database({"keks": 3}, tmp)),
                Member(layout.MASTER_KEY_MEMBER, age.seal(keys.master_key, [keys.recipient])),
            ],
            counts={"keyring.db:keks": 3},
        ),
        Part(
            "log-shipper",
            [Member("log-shipper/log-shipper-h1.db", database({"cursors": 4}, tmp))],
            host_id="h1",
            counts={"log-shipper-h1.db:cursors": 4},
            left_out=["live tails"],
        ),
        Part(
            "log-shipper",
            [
                Member("log-shipper", kind="dir"),
                Member("log-shipper/log-shipper-h2.db", database({"cursors": 5}, tmp)),
            ],
            host_id="h2",
            counts={"log-shipper-h2.db:cursors": 5},
        ),
    ]


def write_snapshot(
    folder: Path,
    keys: Keys,
    parts: list[Part],
    *,
    edit: Callable[[layout.Manifest], layout.Manifest] = lambda m: m,
) -> Path:
    folder.mkdir(parents=True)
    infos = [write_part(folder, part, [keys.recipient]) for part in parts]
    manifest = layout.Manifest(
        id="s20261203T101500Z-test",
        started_at="2026-12-03T10:15:00Z",
        finished_at="2026-12-03T10:16:00Z",
        recipients=[age.fingerprint(keys.recipient)],
        parts=infos,
    )
    sign(folder, layout.encode(edit(manifest)), keys.signer)
    return folder


@pytest.fixture
def snapshot(tmp_path: Path, keys: Keys) -> Path:
    return write_snapshot(tmp_path / "snap", keys, platform_parts(keys, tmp_path))


def tree(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under `path` with its mode and content: what 'unchanged' is checked by."""
    found: dict[str, tuple[int, bytes]] = {}
    if not path.exists():
        return found
    for entry in sorted(path.rglob("*")):
        info = entry.lstat()
        data = entry.read_bytes() if stat.S_ISREG(info.st_mode) else b""
        found[str(entry.relative_to(path))] = (info.st_mode, data)
    return found


def leftovers(home: Path) -> list[str]:
    return [p.name for p in home.parent.iterdir() if p.name.startswith(f"{home.name}.restoring-")]


# ---- a good snapshot ------------------------------------------------------------------------


def test_a_good_snapshot_restores_every_part_and_the_master_key(
    snapshot: Path, keys: Keys, tmp_path: Path
) -> None:
    """Files in place, master.key from the sealed copy (0600), restored.json, counts matching."""
    home = tmp_path / "home"
    report = restore(snapshot, home, [keys.identity_file], {keys.signer_hex})

    assert (home / "gateway/repos/a1.git/HEAD").read_bytes() == b"ref: refs/heads/main\n"
    master = home / "keyring/master.key"
    assert master.read_bytes() == keys.master_key
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    with sqlite3.connect(f"file:{home / 'gateway/gateway.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM apps").fetchone() == (2,)
    conn.close()
    # Both hosts' parts share the log-shipper's folder.
    assert sorted(p.name for p in (home / "log-shipper").iterdir()) == [
        "log-shipper-h1.db",
        "log-shipper-h2.db",
    ]
    # No setuid, nothing for others: the hook keeps only its owner's bits.
    hook = home / "gateway/repos/a1.git/hooks/post-receive"
    assert stat.S_IMODE(hook.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "gateway/repos").stat().st_mode) == 0o700

    record = json.loads((home / RESTORED).read_text())
    assert record["snapshot_id"] == "s20261203T101500Z-test"
    manifest_sha = hashlib.sha256((snapshot / layout.MANIFEST).read_bytes()).hexdigest()
    assert record["manifest_sha256"] == manifest_sha
    assert record["left_out"] == [
        "gateway: sources not yet built: push them again",
        "log-shipper@h1: live tails",
    ]
    assert report.ok and len(report.counts) == 6
    assert leftovers(home) == []


def test_a_dry_run_compares_counts_and_leaves_nothing(
    snapshot: Path, keys: Keys, tmp_path: Path
) -> None:
    """Every count matches; the temporary folder is gone, no master key was written anywhere."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    report = dry_run(snapshot, [keys.identity_file], {keys.signer_hex}, scratch=scratch)
    assert report.ok
    assert {(row.part, row.key, row.found) for row in report.counts} >= {
        ("gateway", "gateway.db:apps", 2),
        ("gateway", "gateway/repos:files", 3),
        ("log-shipper@h2", "log-shipper-h2.db:cursors", 5),
    }
    assert list(scratch.iterdir()) == []
    # Raw identities work too (the CLI's admin:snapshot:verify may hold them already).
    assert dry_run(snapshot, [keys.identity], scratch=scratch).ok


def test_a_count_named_by_a_label_is_shown_not_compared(keys: Keys, tmp_path: Path) -> None:
    """`router-ca:files` names no folder of the tar: not checked, and no difference."""
    parts = platform_parts(keys, tmp_path)
    parts[0].counts["router-ca:files"] = 2
    report = dry_run(write_snapshot(tmp_path / "snap", keys, parts), [keys.identity_file])
    [row] = [row for row in report.counts if row.key == "router-ca:files"]
    assert (row.checked, row.ok, row.verdict) == (
        False,
        True,
        "not checked: router-ca names no folder of the part",
    )


def test_a_dry_run_names_a_count_that_differs(
    keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest counting rows the database does not hold: the dry run says so, exit 1."""
    parts = platform_parts(keys, tmp_path)
    parts[0].counts["gateway.db:apps"] = 3
    folder = write_snapshot(tmp_path / "snap", keys, parts)
    report = dry_run(folder, [keys.identity_file])
    assert [(row.key, row.expected, row.found) for row in report.counts if not row.ok] == [
        ("gateway.db:apps", 3, 2)
    ]
    assert main([str(folder), "--identity", str(keys.identity_file), "--dry-run"]) == 1
    assert "DIFFERS" in capsys.readouterr().out


# ---- bad snapshots: refused, nothing changed -------------------------------------------------


def flip_byte(folder: Path) -> None:
    piece = folder / "gateway/001.age"
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0x01
    piece.write_bytes(bytes(data))


def truncate(folder: Path) -> None:
    piece = folder / "gateway/001.age"
    piece.write_bytes(piece.read_bytes()[:-100])


def remove_piece(folder: Path) -> None:
    (folder / "keyring/000.age").unlink()


def alter_manifest(folder: Path) -> None:
    text = (folder / layout.MANIFEST).read_bytes()
    (folder / layout.MANIFEST).write_bytes(
        text.replace(b"2026-12-03T10:16:00Z", b"2026-12-03T10:17:00Z")
    )


DAMAGE = {
    "flipped byte": (flip_byte, "gateway/001.age: its SHA-256 differs from the manifest's"),
    "truncated piece": (truncate, "gateway/001.age: "),
    "missing piece": (remove_piece, "keyring/000.age: missing"),
    "manifest altered after signing": (alter_manifest, "does not match its signature"),
}


@pytest.fixture(params=["absent", "empty"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The home a refused restore must leave as it was: not there, or there and empty."""
    home = tmp_path / "target" / "home"
    home.parent.mkdir()
    if request.param == "empty":
        home.mkdir()
    return home


def assert_refused(
    home: Path, before: dict[str, tuple[int, bytes]], existed: bool, exc: RestoreRefused, text: str
) -> None:
    assert any(text in problem for problem in exc.problems), exc.problems
    assert home.exists() == existed
    assert tree(home) == before
    assert leftovers(home) == []


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_snapshot_is_refused_and_nothing_changes(
    snapshot: Path, keys: Keys, target: Path, damage: str
) -> None:
    """A flipped byte, a truncated or missing piece, an altered manifest: refused, all keyless."""
    spoil, message = DAMAGE[damage]
    spoil(snapshot)
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(snapshot, target, [keys.identity_file], {keys.signer_hex})
    assert_refused(target, before, existed, refused.value, message)
    if damage == "truncated piece":
        assert "truncated?" in refused.value.problems[0]


def test_the_wrong_identity_is_refused_naming_the_recipients(
    snapshot: Path, keys: Keys, target: Path, tmp_path: Path
) -> None:
    """An identity the pieces are not sealed to: one line naming the recipients, nothing changed."""
    other = tmp_path / "other.key"
    other.write_text(age.format_identity(age.generate_identity()) + "\n")
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(snapshot, target, [other], {keys.signer_hex})
    fingerprint = age.fingerprint(keys.recipient)[:16]
    assert refused.value.problems == [
        f"the identity {other} is not one the snapshot is sealed to"
        f" (it is sealed to {fingerprint}…)"
    ]
    assert_refused(target, before, existed, refused.value, "is not one the snapshot is sealed to")


def test_a_newer_format_is_refused(keys: Keys, tmp_path: Path, target: Path) -> None:
    """A snapshot of format FORMAT+1, properly signed: this Slipway does not read it."""
    folder = write_snapshot(
        tmp_path / "snap",
        keys,
        platform_parts(keys, tmp_path),
        edit=lambda m: replace(m, format=FORMAT + 1),
    )
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(folder, target, [keys.identity_file])
    assert_refused(target, before, existed, refused.value, f"has format {FORMAT + 1}, newer than")


def test_a_signer_not_trusted_is_refused(snapshot: Path, keys: Keys, target: Path) -> None:
    """--signer names the platform's key: a manifest signed by any other key is refused."""
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(snapshot, target, [keys.identity_file], {other})
    assert_refused(target, before, existed, refused.value, "not by a key you trust")


def test_a_home_that_is_not_empty_is_refused(snapshot: Path, keys: Keys, tmp_path: Path) -> None:
    """A home holding anything is never restored into, and stays byte for byte as it was."""
    home = tmp_path / "home"
    (home / "gateway").mkdir(parents=True)
    (home / "gateway/gateway.db").write_bytes(b"live data")
    before = tree(home)
    with pytest.raises(RestoreRefused) as refused:
        restore(snapshot, home, [keys.identity_file], {keys.signer_hex})
    assert_refused(home, before, True, refused.value, f"{home} is not empty: restore into a fresh")


HOSTILE = {
    "dot-dot": (Member("../evil", b"x"), "'..', '.' or an empty component"),
    "inner dot-dot": (Member("gateway/../../evil", b"x"), "'..', '.' or an empty component"),
    "absolute": (Member("/tmp/evil", b"x"), "an absolute name"),
    "symlink": (Member("gateway/link", kind="symlink", link="/etc"), "a symbolic link"),
    "hardlink": (Member("gateway/hard", kind="hardlink", link="/etc/shadow"), "a hard link"),
    "device": (Member("gateway/dev", kind="chr"), "a device or a FIFO"),
    "hidden top folder": (Member(".ssh/authorized_keys", b"x"), "not a plain folder name"),
    "file at the top": (Member("evil", b"x"), "outside any service's folder"),
    "duplicate": (Member("gateway/gateway.db", b"again"), "appears twice"),
    "file under a file": (
        Member("gateway/gateway.db/x", b"x"),
        "its parent gateway/gateway.db is a file",
    ),
    "master key in the clear": (Member("keyring/master.key", b"k" * 32), "never travels"),
}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_tar_member_is_refused(
    keys: Keys, tmp_path: Path, target: Path, hostile: str
) -> None:
    """Links, devices, names leaving the home: refused with the member named, nothing changed."""
    member, message = HOSTILE[hostile]
    parts = platform_parts(keys, tmp_path)
    parts[0].members.append(member)
    folder = write_snapshot(tmp_path / "snap", keys, parts)
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(folder, target, [keys.identity_file], {keys.signer_hex})
    assert_refused(target, before, existed, refused.value, message)
    assert f"gateway: member {member.name!r} refused" in refused.value.problems[0]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_a_part_larger_than_its_manifest_says_is_refused(
    keys: Keys, tmp_path: Path, target: Path
) -> None:
    """The pieces' tar bytes are bounded by the manifest's plain_bytes (a zstd bomb stops there)."""

    def shrink(manifest: layout.Manifest) -> layout.Manifest:
        parts = [replace(manifest.parts[0], plain_bytes=1024), *manifest.parts[1:]]
        return replace(manifest, parts=parts)

    folder = write_snapshot(tmp_path / "snap", keys, platform_parts(keys, tmp_path), edit=shrink)
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(folder, target, [keys.identity_file])
    assert_refused(target, before, existed, refused.value, "more than the 1024 tar bytes")


def test_a_snapshot_without_the_sealed_master_key_is_refused(
    keys: Keys, tmp_path: Path, target: Path
) -> None:
    """No master-key.recovery.age in the keyring's part: nothing could be opened after a restore."""
    parts = platform_parts(keys, tmp_path)
    parts[1].members.pop()
    folder = write_snapshot(tmp_path / "snap", keys, parts)
    existed, before = target.exists(), tree(target)
    with pytest.raises(RestoreRefused) as refused:
        restore(folder, target, [keys.identity_file])
    assert_refused(
        target, before, existed, refused.value, "holds no keyring/master-key.recovery.age"
    )


# ---- the command -----------------------------------------------------------------------------


def test_scripts_restore_restores_and_refuses_with_one_line(
    snapshot: Path, keys: Keys, tmp_path: Path
) -> None:
    """The wrapper runs from the checkout's .venv; a refusal is one line on stderr, exit 1."""
    home = tmp_path / "restored-home"
    env = {**os.environ, "SLIPWAY_HOME": str(home)}
    other = tmp_path / "other.key"
    other.write_text(age.format_identity(age.generate_identity()) + "\n")
    command = [str(ROOT / "scripts/restore"), str(snapshot), "--identity", str(keys.identity_file)]
    # Of two identities, the one the snapshot is sealed to opens it.
    done = subprocess.run(
        [*command, "--identity", str(other), "--signer", keys.signer_hex],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "what does not come back:" in done.stdout
    assert "  - gateway: sources not yet built: push them again" in done.stdout
    assert f"next: SLIPWAY_HOME={home} scripts/up" in done.stdout
    assert (home / "keyring/master.key").read_bytes() == keys.master_key

    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"restore refused: {home} is not empty: restore into a fresh SLIPWAY_HOME"
    ]


async def test_a_part_written_by_the_exporter_restores_with_matching_counts(
    keys: Keys, tmp_path: Path
) -> None:
    """libs/snapshot/export.py's tar (no folder members above its files) restores, counts equal."""
    from slipway.libs.snapshot.export import Database, File, Folder, Sources, export

    state = tmp_path / "live" / "gateway"
    (state / "repos/a1.git/refs/heads").mkdir(parents=True)
    (state / "repos/a1.git/HEAD").write_text("ref: refs/heads/main\n")
    (state / "repos/a1.git/refs/heads/main").write_text("0" * 40 + "\n")
    (state / "url-signing.key").write_bytes(os.urandom(32))
    (state / "gateway.db").write_bytes(database({"apps": 2}, tmp_path))
    keyring = tmp_path / "live" / "keyring"
    keyring.mkdir()
    (keyring / "master-key.recovery.age").write_bytes(age.seal(keys.master_key, [keys.recipient]))
    sources = {
        "gateway": Sources(
            databases=[Database(state / "gateway.db", "gateway/gateway.db")],
            files=[File(state / "url-signing.key", "gateway/url-signing.key")],
            folders=[
                Folder(state / "repos/a1.git", "gateway/repos/a1.git/", count="gateway/repos")
            ],
            left_out=["sources not yet built"],
        ),
        "keyring": Sources(
            files=[File(keyring / "master-key.recovery.age", layout.MASTER_KEY_MEMBER)]
        ),
    }
    folder = tmp_path / "snap"
    parts = []
    for service, declared in sources.items():
        done = await export(declared, [keys.recipient], folder / service, piece_size=PIECE_SIZE)
        parts.append(
            PartInfo(
                service=service,
                host_id="",
                pieces=done.pieces,
                plain_bytes=done.plain_bytes,
                counts=done.counts,
                left_out=done.left_out,
            )
        )
    manifest = layout.Manifest(
        id="s20261203T101500Z-export",
        started_at="2026-12-03T10:15:00Z",
        finished_at="2026-12-03T10:16:00Z",
        recipients=[age.fingerprint(keys.recipient)],
        parts=parts,
    )
    sign(folder, layout.encode(manifest), keys.signer)

    home = tmp_path / "home"
    report = restore(folder, home, [keys.identity_file], {keys.signer_hex})
    assert report.ok and {row.key for row in report.counts} == {
        "gateway.db:apps",
        "gateway/repos:files",
    }
    assert (home / "gateway/repos/a1.git/refs/heads/main").read_text() == "0" * 40 + "\n"
    assert (home / "keyring/master.key").read_bytes() == keys.master_key
