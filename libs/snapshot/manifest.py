"""A platform snapshot's layout and its signed manifest.

A snapshot is a folder, in the backup storage under `platform/snapshots/<id>/` or copied
anywhere (a USB disk, a bucket downloaded with any S3 tool):

    <id>/manifest.json              this module's Manifest, canonical JSON
    <id>/manifest.sig               {"public_key": hex, "signature": hex} (Ed25519)
    <id>/<part>/<NNN>.age           each part's pieces: age(zstd(piece of a tar))

A part is what one service instance exported (`gateway`, `log-shipper@local`); its tar's
member names start with the folder under SLIPWAY_HOME they restore into (`gateway/…`,
`registry/…`), so a restore needs no knowledge of any service. Every piece opens alone
with `age -d -i KEY piece | zstd -d`; a part's tar is the concatenation of its pieces.
The keyring's master key is never in a part in the clear: the keyring's part carries
`keyring/master-key.recovery.age`, the key as the keyring sealed it to the same recovery
recipients when it was made.

The signature is over SNAPSHOT_SIGN_PREFIX + manifest.json's bytes, by the keyring's
platform signing key; a keyless check (`verify_layout`) needs no identity, only the
folder, and names every missing, resized or altered piece.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts.snapshot import FORMAT, SNAPSHOT_SIGN_PREFIX, PartInfo, Piece

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MASTER_KEY_MEMBER = "keyring/master-key.recovery.age"  # in the keyring's tar
STORAGE_PREFIX = "platform/snapshots/"  # where snapshots live in the backup storage


class SnapshotError(Exception):
    """A snapshot that cannot be trusted or used; the message says which and why."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a snapshot holds, with each piece's hash: the one file that is signed."""

    format: int = FORMAT
    id: str
    kind: Literal["manual", "scheduled"] = "manual"
    started_at: str
    finished_at: str
    # Fingerprints (libs/crypto/age.fingerprint) of the recovery recipients the pieces are
    # sealed to: a restore names them when the identity given is none of them.
    recipients: list[str]
    parts: list[PartInfo]
    # Ids of the snapshot before this one, and its manifest's hash: a chain a restore can show.
    previous: str = ""
    previous_sha256: str = ""
    requested_by: str = ""


class Signature(msgspec.Struct, frozen=True, kw_only=True):
    public_key: str  # hex
    signature: str  # hex


def part_name(service: str, host_id: str) -> str:
    """The folder of one instance's part: `gateway`, or `log-shipper@local` per host."""
    return f"{service}@{host_id}" if host_id else service


def piece_path(part: PartInfo, piece: Piece) -> str:
    """A piece's path inside the snapshot folder."""
    return f"{part_name(part.service, part.host_id)}/{piece.name}"


def encode(manifest: Manifest) -> bytes:
    """The manifest's canonical bytes (keys sorted, no spaces): what is hashed and signed."""
    return msgspec.json.encode(msgspec.to_builtins(manifest, order="sorted"))


def signed_message(manifest_bytes: bytes) -> bytes:
    return SNAPSHOT_SIGN_PREFIX + manifest_bytes


def decode(data: bytes) -> Manifest:
    """A manifest from its bytes; a newer format is refused before anything else is read."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"{MANIFEST} is not JSON ({exc}): the snapshot is damaged") from None
    if not isinstance(raw, dict):
        raise SnapshotError(f"{MANIFEST} is not a manifest: the snapshot is damaged")
    version = raw.get("format")
    if not isinstance(version, int):
        raise SnapshotError(f"{MANIFEST} states no format version: the snapshot is damaged")
    if version > FORMAT:
        raise SnapshotError(
            f"the snapshot has format {version}, newer than this Slipway understands"
            f" ({FORMAT}): restore it with the version that made it, or a newer one"
        )
    try:
        return msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise SnapshotError(f"{MANIFEST} does not hold a manifest ({exc})") from None


def check_signature(manifest_bytes: bytes, sig_bytes: bytes, trusted: set[str] | None) -> str:
    """The hex public key that signed `manifest_bytes`; SnapshotError if it did not.

    `trusted`, when given, are the only keys accepted (the operator's note of the
    platform's signing key, or the running keyring's): any other signer is refused.
    """
    try:
        sig = msgspec.json.decode(sig_bytes, type=Signature)
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig.public_key))
        public.verify(bytes.fromhex(sig.signature), signed_message(manifest_bytes))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        raise SnapshotError(f"{SIGNATURE} is damaged: the manifest is not signed") from None
    except InvalidSignature:
        raise SnapshotError(
            f"{MANIFEST} does not match its signature: the snapshot was altered or damaged"
        ) from None
    if trusted is not None and sig.public_key not in trusted:
        raise SnapshotError(
            f"the manifest is signed by {sig.public_key[:16]}…, not by a key you trust"
            f" ({', '.join(k[:16] + '…' for k in sorted(trusted)) or 'none given'})"
        )
    return sig.public_key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_layout(folder: Path, trusted: set[str] | None = None) -> tuple[Manifest, list[str]]:
    """Keyless checks of a snapshot folder: the manifest, its signature, every piece.

    Returns the manifest and the problems found (one readable line each; empty when the
    snapshot is whole). A manifest that cannot be read or trusted raises SnapshotError.
    """
    try:
        manifest_bytes = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{folder} holds no {MANIFEST}: not a snapshot, or cut short") from None
    try:
        sig_bytes = (folder / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{folder} holds no {SIGNATURE}: the snapshot is unsigned") from None
    manifest = decode(manifest_bytes)
    check_signature(manifest_bytes, sig_bytes, trusted)
    expected: list[tuple[str, int, str]] = [
        (piece_path(part, piece), piece.size, piece.sha256)
        for part in manifest.parts
        for piece in part.pieces
    ]
    problems: list[str] = []
    for name, size, sha in expected:
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (found := path.stat().st_size) != size:
            problems.append(f"{name}: {found} bytes, the manifest says {size} (truncated?)")
        elif sha256_file(path) != sha:
            problems.append(f"{name}: its SHA-256 differs from the manifest's (altered)")
    return manifest, problems
