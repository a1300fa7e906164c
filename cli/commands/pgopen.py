"""pg:backups:open: check and open downloaded backup objects on the customer's machine, offline.

Nothing is trusted before it is checked, and nothing is written before everything is:

1. every manifest's Ed25519 signature, with the audit keys this CLI pinned (never the
   key a manifest carries, unless it is the pinned one);
2. the manifests' hash chain: consecutive `seq`, each `prev` the SHA-256 of the
   previous manifest's canonical bytes;
3. every object's SHA-256 against the signed manifests (an object no manifest signs, or
   a base part that is missing, is refused too).

Then the objects are opened with the customer's age identities and zstd-decompressed
into OUT (built in a hidden folder next to it and renamed at the end): `data/` (the
data directory, from the base backup's tar, extracted with tarfile's "data" filter: no
absolute paths, no "..", no links leaving it, no devices), `wal/<segment>` (the WAL
pieces placed at their offsets, zero-padded to 16 MiB; from the base backup's end on a
hole is an error naming the segment), `tables.json` (the backup's `counts` object) and
`README.txt` saying how to start PostgreSQL on it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.cli.auditpins import Pins
from slipway.cli.commands.pg import METADATA
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command

FORMAT = "slipway-backup-manifest/1"
SEGMENT_SIZE = 16 * 1024 * 1024

Raw = Mapping[str, Any]


def canonical(manifest: Raw) -> bytes:
    """The bytes a manifest's hash and signature cover."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def signed_message(manifest: Raw) -> bytes:
    return f"{FORMAT}\n{manifest.get('team_id', '')}\n".encode() + canonical(manifest)


@dataclass
class Checked:
    """Manifests whose signatures and chain hold, and the objects they sign."""

    manifests: list[Raw]
    objects: dict[str, Raw] = field(default_factory=dict)  # key -> ObjectInfo (as JSON)


def load_manifests(folder: Path) -> list[tuple[Path, Raw]]:
    """Every manifest object under `folder` (`<addon>/manifests/<seq>`)."""
    found: list[tuple[Path, Raw]] = []
    for path in sorted(folder.glob("*/manifests/*")):
        if path.name.endswith(".partial") or not path.is_file():
            continue
        try:
            document = json.loads(path.read_bytes())
        except ValueError:
            raise CliError(f"Manifest {_rel(folder, path)} is not JSON: it was altered.") from None
        if not isinstance(document, dict) or not isinstance(document.get("manifest"), dict):
            raise CliError(f"Manifest {_rel(folder, path)} has no manifest in it.")
        found.append((path, document))
    if not found:
        raise CliError(
            f"{folder} holds no manifest: download it with `slipway pg:backups:download`."
        )
    return found


def _rel(folder: Path, path: Path) -> str:
    return path.relative_to(folder).as_posix()


def check_signature(name: str, document: Raw, keys: Mapping[str, bytes]) -> Raw:
    """The manifest of `document` if a pinned audit key signed it; CliError naming it if not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    manifest: Raw = document["manifest"]
    key_id = str(document.get("key_id") or "")
    pinned = keys.get(key_id)
    if pinned is None:
        raise CliError(
            f"Manifest {name} is signed with audit key {key_id!r}, which this CLI has not"
            " pinned: run `slipway audit --verify` (or pg:backups:download) while online first."
        )
    try:
        carried = base64.b64decode(str(document.get("public_key") or ""), validate=True)
        signature = base64.b64decode(str(document.get("signature") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise CliError(f"Manifest {name}: its signature is not base64.") from None
    if carried and carried != pinned:
        raise CliError(f"Manifest {name} carries another public key than the pinned {key_id}.")
    try:
        Ed25519PublicKey.from_public_bytes(pinned).verify(signature, signed_message(manifest))
    except (InvalidSignature, ValueError):
        raise CliError(
            f"Manifest {name}: BAD SIGNATURE (audit key {key_id}): it was altered, or not"
            " signed by the platform."
        ) from None
    if manifest.get("format") != FORMAT:
        raise CliError(f"Manifest {name} is of an unknown format {manifest.get('format')!r}.")
    return manifest


def check_manifests(folder: Path, keys: Mapping[str, bytes]) -> Checked:
    """Signatures first, then one unbroken chain over the manifests present."""
    signed = [
        (_rel(folder, path), check_signature(_rel(folder, path), doc, keys))
        for path, doc in load_manifests(folder)
    ]
    signed.sort(key=lambda pair: int(pair[1].get("seq") or 0))
    owners = {(m.get("team_id"), m.get("addon_id")) for _, m in signed}
    if len(owners) != 1:
        raise CliError("The manifests belong to more than one database: open one at a time.")
    previous: Raw | None = None
    for name, manifest in signed:
        seq = int(manifest.get("seq") or 0)
        if previous is None:
            if seq == 1 and manifest.get("prev") != "":
                raise CliError(f"Manifest {name} (seq 1) claims a predecessor.")
        else:
            before = int(previous.get("seq") or 0)
            if seq != before + 1:
                missing = ", ".join(str(n) for n in range(before + 1, min(seq, before + 4)))
                more = "..." if seq > before + 4 else ""
                raise CliError(
                    f"The manifest chain has a GAP: seq {missing}{more} is missing between"
                    f" {before} and {seq} (at {name})."
                )
            if manifest.get("prev") != hashlib.sha256(canonical(previous)).hexdigest():
                raise CliError(
                    f"The manifest chain is BROKEN at {name} (seq {seq}): its prev is not the"
                    f" hash of manifest {before}."
                )
        previous = manifest
    checked = Checked(manifests=[m for _, m in signed])
    for manifest in checked.manifests:
        for item in manifest.get("objects") or []:
            checked.objects[str(item.get("key"))] = item
    return checked


def check_objects(folder: Path, checked: Checked) -> list[tuple[Path, Raw]]:
    """Every object file present, with the manifest entry that signs it; hashes checked."""
    present = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = _rel(folder, path)
        if key == METADATA or "/manifests/" in f"/{key}" or key.endswith(".partial"):
            continue
        item = checked.objects.get(key)
        if item is None:
            raise CliError(f"Object {key} is listed by no signed manifest: refusing it.")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(block)
        if digest.hexdigest() != item.get("sha256"):
            raise CliError(
                f"Object {key} does NOT match its signed SHA-256: it was altered or damaged."
                " Nothing was written."
            )
        present.append((path, item))
    return present


def choose_base(checked: Checked, present: Sequence[tuple[Path, Raw]], num: int) -> Raw:
    """The base backup manifest to open: `num`, else the newest one downloaded."""
    bases = [m for m in checked.manifests if m.get("kind") == "base"]
    if num:
        bases = [m for m in bases if int(m.get("backup_num") or 0) == num]
    have = {str(item.get("key")) for _, item in present}
    bases = [m for m in bases if any(str(o.get("key")) in have for o in m.get("objects") or [])]
    if not bases:
        raise CliError("No base backup among the downloaded objects: download a backup first.")
    base = max(bases, key=lambda m: int(m.get("backup_num") or 0))
    for item in base.get("objects") or []:
        if item.get("kind") == "base" and str(item.get("key")) not in have:
            raise CliError(f"Base backup part {item.get('key')} is missing: download it again.")
    return base


def _open(path: Path, key: str, identities: Sequence[bytes]) -> bytes:
    from slipway.libs.crypto import age
    from slipway.libs.crypto.errors import DecryptionFailed

    try:
        return age.open_sealed(path.read_bytes(), identities)
    except DecryptionFailed as exc:
        raise CliError(
            f"Cannot open {key} with the given identity: {exc.message}. The backup is sealed"
            " to the keys `slipway keys` lists; use the identity of one of them."
        ) from None


def _decompress_stream(parts: Sequence[bytes]) -> Any:
    import io

    import zstandard

    joined = io.BytesIO(b"".join(parts))
    return zstandard.ZstdDecompressor().stream_reader(joined, read_across_frames=True)


def _decompress(data: bytes, key: str) -> bytes:
    import zstandard

    try:
        with _decompress_stream([data]) as reader:
            return bytes(reader.read())
    except zstandard.ZstdError as exc:
        raise CliError(f"Object {key} opened but is not zstd data: {exc}.") from None


def extract_base(
    folder: Path,
    base: Raw,
    present: Sequence[tuple[Path, Raw]],
    identities: Sequence[bytes],
    data: Path,
) -> None:
    """Open the base parts in order, decompress them as one stream and extract the tar safely."""
    import zstandard

    by_key = {str(item.get("key")): path for path, item in present}
    parts = sorted(
        (o for o in base.get("objects") or [] if o.get("kind") == "base"),
        key=lambda o: int(o.get("part") or 0),
    )
    opened = [_open(by_key[str(o["key"])], str(o["key"]), identities) for o in parts]
    data.mkdir(mode=0o700)
    try:
        with _decompress_stream(opened) as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
            tar.extractall(data, filter="data")
    except (tarfile.TarError, zstandard.ZstdError) as exc:
        raise CliError(
            f"The base backup {base.get('backup_num')} does not unpack: {exc}."
        ) from None


def segment_start(segment: str) -> int:
    """The LSN where a WAL segment (24 hex digits: timeline, log, segment) begins."""
    if len(segment) != 24 or any(c not in "0123456789ABCDEF" for c in segment):
        raise CliError(f"WAL segment name {segment[:40]!r} is not 24 hex digits.")
    return (int(segment[8:16], 16) << 32) + int(segment[16:24], 16) * SEGMENT_SIZE


def parse_lsn(text: object) -> int | None:
    high, _, low = str(text or "").partition("/")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return None


def write_wal(
    base: Raw, present: Sequence[tuple[Path, Raw]], identities: Sequence[bytes], wal: Path
) -> list[str]:
    """Each segment's pieces placed at their offsets, zero-padded to 16 MiB.

    From the base backup's end on, the pieces must cover the WAL without a hole (what
    comes before it is in the base's own pg_wal); a hole names the segment it is in.
    """
    pieces = sorted(
        (
            (segment_start(str(item.get("segment"))) + int(item.get("offset") or 0), path, item)
            for path, item in present
            if item.get("kind") == "wal"
        ),
        key=lambda t: t[0],
    )
    covered = parse_lsn(base.get("end_lsn"))
    segments: dict[str, bytearray] = {}
    for start, path, item in pieces:
        key, segment = str(item.get("key")), str(item.get("segment"))
        if covered is not None and start > covered:
            first = segment_start(segment)
            raise CliError(
                f"WAL segment {segment} has a GAP: bytes {max(covered - first, 0)} to"
                f" {start - first} are missing, so no restore can go past it."
            )
        plain = _decompress(_open(path, key, identities), key)
        offset = int(item.get("offset") or 0)
        if len(plain) != int(item.get("length") or 0) or offset + len(plain) > SEGMENT_SIZE:
            raise CliError(f"WAL piece {key} does not have the length its manifest says.")
        buffer = segments.setdefault(segment, bytearray(SEGMENT_SIZE))
        buffer[offset : offset + len(plain)] = plain
        end = start + len(plain)
        covered = end if covered is None else max(covered, end)
    wal.mkdir()
    for segment, buffer in segments.items():
        (wal / segment).write_bytes(bytes(buffer))
    return sorted(segments)


def write_counts(
    base: Raw, present: Sequence[tuple[Path, Raw]], identities: Sequence[bytes], out: Path
) -> None:
    """The row counts the base backup recorded, as tables.json (for checking a restore)."""
    wanted = {str(o.get("key")) for o in base.get("objects") or [] if o.get("kind") == "counts"}
    for path, item in present:
        key = str(item.get("key"))
        if key in wanted:
            (out / "tables.json").write_bytes(_decompress(_open(path, key, identities), key))


def readme(out: Path, base: Raw, segments: Sequence[str], to_time: str) -> str:
    target = f"recovery_target_time = '{to_time}'\n" if to_time else ""
    return (
        f"Backup {base.get('backup_num')} of add-on {base.get('addon_id')}"
        f" (WAL {base.get('start_lsn')} - {base.get('end_lsn')}), opened"
        f" {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}.\n"
        f"Checked: manifest signatures, hash chain, every object's SHA-256.\n\n"
        "  data/        the data directory (PostgreSQL of the same major version)\n"
        f"  wal/         {len(segments)} WAL segments to replay\n"
        "  tables.json  row counts at the backup, to compare with\n\n"
        "Start it (as the user owning these files):\n\n"
        f"  chmod 0700 {out}/data\n"
        f"  touch {out}/data/recovery.signal\n"
        f"  cat >> {out}/data/postgresql.auto.conf <<'EOF'\n"
        f"restore_command = 'cp {out}/wal/%f \"%p\"'\n"
        f"{target}"
        "recovery_target_action = 'promote'\n"
        "recovery_target_timeline = 'latest'\n"
        "EOF\n"
        f"  postgres -D {out}/data -c port=5433 -c listen_addresses=localhost"
        " -c archive_mode=off\n\n"
        "Then `pg_dump` what you need, or keep it running.\n"
    )


def _identities(path: str) -> list[bytes]:
    from slipway.libs.crypto import age
    from slipway.libs.crypto.errors import InvalidKey

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"Cannot read the identity file {path}: {exc.strerror or exc}.") from None
    try:
        return age.parse_identity_file(text)
    except InvalidKey as exc:
        raise CliError(f"{path} is not an age identity file: {exc.message}.") from None


def _metadata(folder: Path) -> Raw:
    try:
        found = json.loads((folder / METADATA).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@command(
    "pg:backups:open",
    "check downloaded backup objects and open them into a data folder (offline)",
    arg("folder", metavar="DIR", help="what pg:backups:download wrote"),
    arg("--identity", "-i", metavar="FILE", required=True, help="your age identity file"),
    arg("-o", "--output", metavar="OUT", help="where to write (default: DIR-opened)"),
    arg(
        "--to-time",
        metavar="ISO8601",
        help="recovery target for README.txt (default: the download's)",
    ),
    arg(
        "--api-url", metavar="URL", help="whose pinned audit keys to use (default: the download's)"
    ),
    description=(
        "Needs no network: manifests are checked with the audit keys this CLI pinned, then\n"
        "every object's SHA-256; any mismatch names the object and writes nothing. The\n"
        "objects are then opened with your identity (age) and written to OUT: data/,\n"
        "wal/ and README.txt (how to start PostgreSQL on it)."
    ),
    examples=("slipway pg:backups:open postgresql-teal-12345-b003 --identity ~/backup-key.txt",),
)
def open_backup(ctx: Context, args: argparse.Namespace) -> None:
    """Verify everything under DIR, then write OUT/data, OUT/wal and OUT/README.txt."""
    folder = Path(args.folder)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder: give what pg:backups:download wrote.")
    meta = _metadata(folder)
    api_url = args.api_url or str(meta.get("api_url") or "") or ctx.credentials().api_url
    keys = Pins.load(ctx.env, api_url).public_keys()
    checked = check_manifests(folder, keys)
    present = check_objects(folder, checked)
    backup = str(meta.get("backup") or "")
    num = int(backup.lstrip("bB")) if backup.lstrip("bB").isdigit() else 0
    base = choose_base(checked, present, num)
    identities = _identities(args.identity)
    out = Path(args.output or f"{folder.as_posix().rstrip('/')}-opened")
    if out.exists():
        raise CliError(f"{out} exists already: choose another -o OUT.")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        extract_base(folder, base, present, identities, partial / "data")
        segments = write_wal(base, present, identities, partial / "wal")
        write_counts(base, present, identities, partial)
        to_time = args.to_time or str(meta.get("to_time") or "")
        (partial / "README.txt").write_text(readme(out.resolve(), base, segments, to_time))
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    ctx.note(
        f"Checked {len(checked.manifests)} signed manifests and {len(present)} objects;"
        f" opened backup {base.get('backup_num')} and {len(segments)} WAL segments into {out}."
    )
    ctx.out(str(out))
