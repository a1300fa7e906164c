"""Restoring a whole platform from a snapshot folder, on a machine with nothing but the checkout.

    python -m slipway.libs.snapshot.restore SNAPSHOT_DIR --identity FILE [--identity FILE2]
        [--home DIR] [--signer HEX ...] [--dry-run]

(`scripts/restore` runs it from the project's .venv.) In this order, and any refusal
leaves the machine as it was:

1. keyless checks (manifest.verify_layout): the manifest's format and signature (against
   `--signer` keys when given), every piece's size and SHA-256;
2. the identity files (age `AGE-SECRET-KEY-1...` lines, as age-keygen writes them);
3. the target home must be absent or empty;
4. every part's pieces opened (age, then zstd) one at a time and unpacked (unpack.py)
   into `<home>.restoring-<random>` beside the home;
5. the keyring's `master-key.recovery.age` opened with the identity into
   `keyring/master.key` (32 raw bytes, 0600, as services/keyring/masterkey.py reads it);
6. `restored.json` written at the staging folder's root, then the staging folder renamed
   to the home: the home appears whole, or not at all.

Files come out root-owned, as the supervisor expects: at each start it gives each
service's folder (`<home>/<service>`, and registry-proxy its `<home>/registry`) to the
service's own account (libs/serviceusers.py); the others run as root.

`--dry-run` does steps 1, 2 and 4 into a temporary folder (the master key is opened but
never written), compares what it unpacked with the counts the manifest records (rows per
table of each database, files per folder: counts.py), prints the table and deletes the
folder; a real restore prints the same table.
`dry_run()` is the same for `slipway admin:snapshot:verify --path DIR --identity FILE`.

Exit status: 0 restored (or the dry run matched), 1 refused (one line per problem on
stderr) or counts that differ.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zstandard

from slipway.contracts.snapshot import PartInfo, Piece
from slipway.libs.crypto import age
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey
from slipway.libs.snapshot import manifest as layout
from slipway.libs.snapshot.counts import CountRow, compare_counts
from slipway.libs.snapshot.manifest import MASTER_KEY_MEMBER, Manifest, SnapshotError
from slipway.libs.snapshot.unpack import READ_BLOCK, ChunkStream, Staging, Unpacked

RESTORED = "restored.json"
MASTER_KEY = "keyring/master.key"
MASTER_KEY_SIZE = 32
# Part folders and piece names as the backup service writes them: nothing that leaves the folder.
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")


class RestoreRefused(SnapshotError):
    """A restore that did not happen; `problems` holds one readable line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Checked:
    """A snapshot folder that passed the keyless checks."""

    folder: Path
    manifest: Manifest
    manifest_sha256: str
    signer: str  # hex Ed25519 public key
    signer_trusted: bool  # checked against --signer keys


@dataclass
class Report:
    """What a restore (or a dry run) unpacked, and how it compares with the manifest."""

    snapshot: Checked
    home: Path | None  # None for a dry run
    parts: dict[str, Unpacked] = field(default_factory=dict)
    counts: list[CountRow] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # "part: line"

    @property
    def ok(self) -> bool:
        """Whether every count matched."""
        return all(row.ok for row in self.counts)

    def lines(self) -> list[str]:
        """The report as printed: parts, counts, what does not come back."""
        manifest = self.snapshot.manifest
        out = [
            f"snapshot {manifest.id} (taken {manifest.started_at} to {manifest.finished_at}),"
            f" signed by {self.snapshot.signer}"
            + ("" if self.snapshot.signer_trusted else " (not checked: no --signer given)"),
            "",
            f"  {'part':<28} {'files':>8} {'folders':>8} {'bytes':>14}",
        ]
        for name, done in self.parts.items():
            out.append(f"  {name:<28} {len(done.files):>8} {len(done.folders):>8} {done.bytes:>14}")
        if self.counts:
            out += ["", f"  {'part':<28} {'count':<40} {'manifest':>9} {'restored':>9}"]
            for row in self.counts:
                found = "-" if row.found is None else str(row.found)
                out.append(
                    f"  {row.part:<28} {row.key:<40} {row.expected:>9} {found:>9}  {row.verdict}"
                )
        out += ["", "what does not come back:"]
        out += [f"  - {line}" for line in self.left_out] or ["  (nothing listed)"]
        return out


# ---- the steps --------------------------------------------------------------------------------


def check_snapshot(folder: Path, trusted: set[str] | None = None) -> Checked:
    """The keyless checks; RestoreRefused lists every problem found."""
    try:
        manifest_bytes = (folder / layout.MANIFEST).read_bytes()
        signature = (folder / layout.SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise RestoreRefused(
            [f"{folder} holds no {Path(str(exc.filename)).name}: not a whole snapshot"]
        ) from None
    except OSError as exc:
        raise RestoreRefused([f"{folder}: {exc.strerror}"]) from None
    try:
        manifest = layout.decode(manifest_bytes)
        signer = layout.check_signature(manifest_bytes, signature, trusted)
        names = _bad_names(manifest)
        if names:
            raise RestoreRefused(names)
        again, problems = layout.verify_layout(folder, trusted)
    except RestoreRefused:
        raise
    except SnapshotError as exc:
        raise RestoreRefused([str(exc)]) from None
    if again != manifest:
        problems.append(f"{layout.MANIFEST} changed while it was being checked")
    if problems:
        raise RestoreRefused(problems)
    return Checked(
        folder=folder,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        signer=signer,
        signer_trusted=trusted is not None,
    )


def _bad_names(manifest: Manifest) -> list[str]:
    bad = []
    for part in manifest.parts:
        name = layout.part_name(part.service, part.host_id)
        if not _PLAIN.fullmatch(name):
            bad.append(f"the manifest names a part {name!r}, which is not a plain folder name")
        bad += [
            f"the manifest names a piece {name}/{piece.name!r}, which is not a plain file name"
            for piece in part.pieces
            if not _PLAIN.fullmatch(piece.name)
        ]
    return bad


def load_identities(paths: Sequence[Path]) -> list[bytes]:
    """Every identity of the given age identity files; RestoreRefused names a bad file."""
    found: list[bytes] = []
    problems = []
    for path in paths:
        try:
            found += age.parse_identity_file(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(f"the identity file {path} cannot be read: {exc.strerror}")
        except UnicodeDecodeError:
            problems.append(f"the identity file {path} is not text: not an age identity file")
        except InvalidKey as exc:
            problems.append(f"{path}: {exc.message}")
    if problems:
        raise RestoreRefused(problems)
    return found


def check_home(home: Path) -> None:
    """Refuse a home that exists and holds anything (or is not a plain folder)."""
    if home.is_symlink():
        raise RestoreRefused([f"{home} is a symbolic link: restore into a fresh SLIPWAY_HOME"])
    if not home.exists():
        if not home.parent.is_dir():
            raise RestoreRefused([f"{home.parent} does not exist: make it, then restore"])
        return
    if not home.is_dir():
        raise RestoreRefused([f"{home} is not a folder: restore into a fresh SLIPWAY_HOME"])
    if any(home.iterdir()):
        raise RestoreRefused([f"{home} is not empty: restore into a fresh SLIPWAY_HOME"])


def unpack_parts(
    snapshot: Checked, identities: Sequence[bytes], who: str, staging: Path
) -> dict[str, Unpacked]:
    """Open every part's pieces and unpack them into `staging`, part after part."""
    parts: dict[str, Unpacked] = {}
    with Staging(staging) as target:
        for part in snapshot.manifest.parts:
            label = layout.part_name(part.service, part.host_id)
            chunks = _plain_chunks(snapshot, part, identities, who)
            try:
                stream = ChunkStream(chunks, limit=part.plain_bytes, label=label)
                with stream:
                    parts[label] = target.unpack(label, stream)
                if stream.produced != part.plain_bytes:
                    raise SnapshotError(
                        f"{label}: its pieces hold {stream.produced} tar bytes, its manifest"
                        f" says {part.plain_bytes}: the part is incomplete"
                    )
            finally:
                chunks.close()
    return parts


def _plain_chunks(
    snapshot: Checked, part: PartInfo, identities: Sequence[bytes], who: str
) -> Generator[bytes, None, None]:
    """A part's tar bytes, one piece opened at a time (memory: about one piece)."""
    for piece in part.pieces:
        name = layout.piece_path(part, piece)
        compressed = _open_piece(snapshot, name, piece, identities, who)
        expected = zstandard.frame_content_size(compressed)
        produced = 0
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(compressed)
            with reader:
                while block := reader.read(READ_BLOCK):
                    produced += len(block)
                    yield block
        except zstandard.ZstdError as exc:
            raise SnapshotError(f"{name}: its content is not zstd ({exc}): damaged") from None
        if expected >= 0 and produced != expected:
            raise SnapshotError(f"{name}: its zstd frame is cut short: damaged")


def _open_piece(
    snapshot: Checked, name: str, piece: Piece, identities: Sequence[bytes], who: str
) -> bytes:
    path = snapshot.folder / name
    with path.open("rb") as file:
        sealed = file.read(piece.size + 1)
    # Hashed again as used: the folder may be on a disk someone else can write to.
    if len(sealed) != piece.size or hashlib.sha256(sealed).hexdigest() != piece.sha256:
        raise SnapshotError(f"{name}: changed since it was checked against the manifest")
    try:
        for identity in identities:
            file_key = age.unwrap_file_key(sealed, identity)
            if file_key is not None:
                return age.open_with_file_key(sealed, file_key)
    except DecryptionFailed as exc:
        raise SnapshotError(f"{name}: {exc.message}: the snapshot is damaged") from None
    raise SnapshotError(not_sealed_to(who, snapshot.manifest))


def not_sealed_to(who: str, manifest: Manifest) -> str:
    """The line for identities that open nothing of the snapshot (`who`: see `_who`)."""
    sealed_to = ", ".join(fp[:16] + "…" for fp in manifest.recipients) or "no recipient listed"
    return f"{who} one the snapshot is sealed to (it is sealed to {sealed_to})"


def open_master_key(
    staging: Path, identities: Sequence[bytes], who: str, manifest: Manifest
) -> bytes:
    """The master key, from the keyring part's sealed copy, opened with the identity."""
    try:
        fd = os.open(staging / MASTER_KEY_MEMBER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SnapshotError(
            f"the snapshot holds no {MASTER_KEY_MEMBER}: without the master key no team's"
            " keys, config or backups can be opened (was SLIPWAY_RECOVERY_RECIPIENTS set?)"
        ) from None
    with os.fdopen(fd, "rb") as file:
        sealed = file.read(64 * 1024)
    try:
        key = age.open_sealed(sealed, identities)
    except DecryptionFailed as exc:
        if "none of the given identities" in exc.message:
            raise SnapshotError(f"{MASTER_KEY_MEMBER}: " + not_sealed_to(who, manifest)) from None
        raise SnapshotError(f"{MASTER_KEY_MEMBER}: {exc.message}: damaged") from None
    if len(key) != MASTER_KEY_SIZE:
        raise SnapshotError(f"{MASTER_KEY_MEMBER} holds {len(key)} bytes, not a 32-byte master key")
    return key


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """`data` in a file that must not exist yet (never through a link), synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        os.fchmod(out.fileno(), mode)
        out.flush()
        os.fsync(out.fileno())


# ---- restore and dry run ----------------------------------------------------------------------


def restore(
    folder: Path, home: Path, identity_files: Sequence[Path], trusted: set[str] | None = None
) -> Report:
    """Restore the snapshot in `folder` into `home` (absent or empty); RestoreRefused if not."""
    snapshot = check_snapshot(folder, trusted)
    identities = load_identities(identity_files)
    who = _who(identity_files)
    home = home.absolute()
    check_home(home)
    staging = home.with_name(f"{home.name}.restoring-{secrets.token_hex(6)}")
    try:
        staging.mkdir(mode=0o700)
    except OSError as exc:
        raise RestoreRefused([f"cannot make {staging}: {exc.strerror}"]) from None
    try:
        report = Report(snapshot, home, left_out=_left_out(snapshot.manifest))
        report.parts = unpack_parts(snapshot, identities, who, staging)
        key = open_master_key(staging, identities, who, snapshot.manifest)
        write_new_file(staging / MASTER_KEY, key, 0o600)
        report.counts = compare_counts(staging, snapshot.manifest, report.parts)
        write_new_file(staging / RESTORED, _restored_json(report), 0o644)
        os.sync()  # everything on disk before the rename makes it the home
        _move_into_place(staging, home)
    except (SnapshotError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _refusal(exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def dry_run(
    folder: Path,
    identities: Sequence[bytes | str | Path],
    trusted: set[str] | None = None,
    *,
    scratch: Path | None = None,
) -> Report:
    """Restore into a temporary folder, compare counts with the manifest, delete the folder.

    `identities`: identity files (paths) or raw 32-byte identities. The master key is
    opened to prove the identity can, never written. RestoreRefused when the snapshot
    cannot be restored; otherwise a Report whose `ok` says whether every count matched.
    """
    snapshot = check_snapshot(Path(folder), trusted)
    files = [Path(item) for item in identities if not isinstance(item, bytes)]
    keys = [item for item in identities if isinstance(item, bytes)]
    keys += load_identities(files)
    if not keys:
        raise RestoreRefused(["no identity given: a dry restore needs one to open the pieces"])
    who = _who(files) if files else "the identity given is not"
    temporary = Path(tempfile.mkdtemp(prefix="slipway-dry-restore-", dir=scratch))
    try:
        target = temporary / "home"
        target.mkdir(mode=0o700)
        report = Report(snapshot, None, left_out=_left_out(snapshot.manifest))
        report.parts = unpack_parts(snapshot, keys, who, target)
        open_master_key(target, keys, who, snapshot.manifest)
        report.counts = compare_counts(target, snapshot.manifest, report.parts)
    except (SnapshotError, OSError) as exc:
        raise _refusal(exc) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return report


def _refusal(exc: SnapshotError | OSError) -> RestoreRefused:
    if isinstance(exc, RestoreRefused):
        return exc
    # A full disk, a folder that cannot be written: one line too, not a traceback.
    return RestoreRefused([str(exc)])


def _who(paths: Sequence[Path]) -> str:
    # The subject of `not_sealed_to`'s sentence.
    if len(paths) == 1:
        return f"the identity {paths[0]} is not"
    return "none of the identities " + ", ".join(str(p) for p in paths) + " is"


def _left_out(manifest: Manifest) -> list[str]:
    return [
        f"{layout.part_name(part.service, part.host_id)}: {line}"
        for part in manifest.parts
        for line in part.left_out
    ]


def _restored_json(report: Report) -> bytes:
    manifest = report.snapshot.manifest
    record = {
        "snapshot_id": manifest.id,
        "manifest_sha256": report.snapshot.manifest_sha256,
        "signer": report.snapshot.signer,
        "snapshot_started_at": manifest.started_at,
        "snapshot_finished_at": manifest.finished_at,
        "restored_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "left_out": report.left_out,
        "parts": {
            name: {"files": len(done.files), "folders": len(done.folders), "bytes": done.bytes}
            for name, done in report.parts.items()
        },
    }
    return msgspec.json.format(msgspec.json.encode(record), indent=2) + b"\n"


def _move_into_place(staging: Path, home: Path) -> None:
    # rename() replaces an empty folder and refuses a non-empty one: a home that something
    # filled since it was checked is never merged into.
    try:
        os.rename(staging, home)
    except OSError as exc:
        raise RestoreRefused(
            [
                f"cannot move the restored state into {home}: {exc.strerror}"
                + (
                    " (is it a mount point? restore into a folder inside it)"
                    if exc.errno == errno.EBUSY
                    else ""
                )
            ]
        ) from None
    fd = os.open(home.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the command ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="scripts/restore",
        description="Restore a Slipway platform from a snapshot folder into a fresh SLIPWAY_HOME.",
    )
    parser.add_argument("snapshot", type=Path, help="the snapshot's folder (manifest.json, parts)")
    parser.add_argument(
        "--identity",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="an age identity file of a recovery recipient (repeat for several)",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("SLIPWAY_HOME") or "var"),
        help="the SLIPWAY_HOME to restore into: absent or empty (default $SLIPWAY_HOME or var/)",
    )
    parser.add_argument(
        "--signer",
        action="append",
        default=None,
        metavar="HEX",
        help="the platform's signing key (hex Ed25519 public key) the manifest must be signed by",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="restore into a temporary folder, compare counts with the manifest, delete it",
    )
    args = parser.parse_args(argv)
    trusted = {key.strip().lower() for key in args.signer} if args.signer else None
    try:
        if args.dry_run:
            report = dry_run(args.snapshot, args.identity, trusted)
        else:
            report = restore(args.snapshot, args.home, args.identity, trusted)
    except RestoreRefused as exc:
        for problem in exc.problems:
            print(f"restore refused: {problem}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    if args.dry_run:
        print()
        if not report.ok:
            print("dry run: the counts above differ from the manifest's", file=sys.stderr)
            return 1
        print("dry run: every count matches the manifest; the temporary folder is deleted")
        return 0
    print(f"\nrestored into {report.home} ({RESTORED} records the snapshot)")
    print(f"the master key: {report.home}/{MASTER_KEY} (0600), opened from its sealed copy")
    if not report.ok:
        print("warning: some counts differ from the manifest's (see above)", file=sys.stderr)
    print(f"next: SLIPWAY_HOME={report.home} scripts/up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
