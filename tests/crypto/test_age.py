"""age v1 files: round trips, interop with pyrage and the `age` CLI, and every tamper refused.

Tamper tests that must get past the header MAC rebuild it with the file key, computed
here from the spec (HKDF-SHA-256 and HMAC-SHA-256), so what they show is the strict
check itself, not the MAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from slipway.libs.crypto import age, sealedbox
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey

CHUNK = 64 * 1024
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5]

# From the spec (age-encryption.org/v1, "The X25519 recipient type").
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


@pytest.fixture(scope="module")
def identity() -> bytes:
    """One X25519 identity for the module."""
    return age.generate_identity()


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _remac(sealed: bytes, file_key: bytes) -> bytes:
    """`sealed` with its header MAC recomputed (after a deliberate edit of the header)."""
    cut = sealed.index(b"\n---") + 4
    end = sealed.index(b"\n", cut) + 1
    mac = hmac.digest(_hkdf(file_key, b"", b"header"), sealed[:cut], hashlib.sha256)
    return sealed[:cut] + b" " + base64.b64encode(mac).rstrip(b"=") + b"\n" + sealed[end:]


def _edit_header(sealed: bytes, identity: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """The file with `edit` applied to its header before the MAC, and a valid MAC again."""
    file_key = age.unwrap_file_key(sealed, identity)
    assert file_key is not None
    cut = sealed.index(b"\n---") + 1
    return _remac(edit(sealed[:cut]) + sealed[cut:], file_key)


# ---- keys --------------------------------------------------------------------------------------


def test_spec_identity_gives_the_spec_recipient() -> None:
    """The spec's example identity parses and yields the spec's example recipient string."""
    identity = age.parse_identity(SPEC_IDENTITY)
    assert age.format_identity(identity) == SPEC_IDENTITY
    assert age.format_recipient(age.public_of(identity)) == SPEC_RECIPIENT
    assert age.parse_recipient(SPEC_RECIPIENT) == age.public_of(identity)


def test_key_strings_match_pyrage(identity: bytes) -> None:
    """pyrage reads our identity string and derives the recipient string we print."""
    theirs = pyrage.x25519.Identity.from_str(age.format_identity(identity))
    assert str(theirs.to_public()) == age.format_recipient(age.public_of(identity))


def test_identity_file_from_age_keygen_parses(tmp_path: Path) -> None:
    """age-keygen's output (with its comment lines) gives one identity of its public key."""
    key_file = tmp_path / "key.txt"
    subprocess.run([_age_tool("age-keygen"), "-o", str(key_file)], check=True, capture_output=True)
    text = key_file.read_text()
    [identity] = age.parse_identity_file(text)
    public_line = next(line for line in text.splitlines() if "public key:" in line)
    assert public_line.endswith(age.format_recipient(age.public_of(identity)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "age1",
        SPEC_RECIPIENT.upper()[:10] + SPEC_RECIPIENT[10:],  # mixed case
        SPEC_RECIPIENT[:-1] + ("q" if SPEC_RECIPIENT[-1] != "q" else "p"),  # checksum
        SPEC_RECIPIENT.replace("age1", "agf1"),
        SPEC_IDENTITY,
        SPEC_IDENTITY.lower(),
        "age1" + "q" * 58,
        " " + SPEC_RECIPIENT,
    ],
    ids=["empty", "bare", "mixed-case", "checksum", "hrp", "identity", "lower-id", "zero", "space"],
)
def test_bad_recipient_strings_are_refused(text: str) -> None:
    """Anything but a well-formed age1... X25519 recipient raises InvalidKey."""
    with pytest.raises(InvalidKey):
        age.parse_recipient(text)


@pytest.mark.parametrize(
    "text",
    [SPEC_RECIPIENT, SPEC_IDENTITY.lower(), SPEC_IDENTITY[:-1] + "Q", SPEC_IDENTITY + "Q"],
    ids=["recipient", "lower-case", "checksum", "longer"],
)
def test_bad_identity_strings_are_refused(text: str) -> None:
    """A recipient, a lower-case identity or a bad checksum is not an identity."""
    with pytest.raises(InvalidKey):
        age.parse_identity(text)


def test_fingerprint_is_the_sealedbox_fingerprint(identity: bytes) -> None:
    """Keys are named the same way whether they seal boxes or age files."""
    public = age.public_of(identity)
    assert age.fingerprint(public) == sealedbox.fingerprint(public)


# ---- round trips and interop -------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(identity: bytes, size: int) -> None:
    """What is sealed to a recipient opens with its identity, at and around chunk boundaries."""
    plaintext = os.urandom(size)
    assert age.open_sealed(age.seal(plaintext, [age.public_of(identity)]), [identity]) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_pyrage_opens_ours_and_we_open_pyrages(identity: bytes, size: int) -> None:
    """Interop both ways with pyrage (rage, the Rust implementation)."""
    plaintext = os.urandom(size)
    theirs = pyrage.x25519.Identity.from_str(age.format_identity(identity))
    assert pyrage.decrypt(age.seal(plaintext, [age.public_of(identity)]), [theirs]) == plaintext
    sealed = pyrage.encrypt(plaintext, [theirs.to_public()])
    assert age.open_sealed(sealed, [identity]) == plaintext


@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK + 7])
def test_age_cli_opens_ours_and_we_open_its(identity: bytes, tmp_path: Path, size: int) -> None:
    """Interop both ways with the reference `age` CLI (Go)."""
    plaintext = os.urandom(size)
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"# a test key\n{age.format_identity(identity)}\n")
    key_file.chmod(0o600)
    opened = subprocess.run(
        [_age_tool("age"), "-d", "-i", str(key_file)],
        input=age.seal(plaintext, [age.public_of(identity)]),
        capture_output=True,
        check=True,
    )
    assert opened.stdout == plaintext
    recipient = age.format_recipient(age.public_of(identity))
    sealed = subprocess.run(
        [_age_tool("age"), "-r", recipient], input=plaintext, capture_output=True, check=True
    ).stdout
    assert age.open_sealed(sealed, [identity]) == plaintext


def test_several_recipients_each_open_it(identity: bytes, tmp_path: Path) -> None:
    """Every recipient opens the same file, with us, pyrage and the CLI; a stranger does not."""
    others = [age.generate_identity() for _ in range(2)]
    stranger = age.generate_identity()
    sealed = age.seal(b"base backup", [age.public_of(i) for i in [identity, *others]])
    for one in [identity, *others]:
        assert age.open_sealed(sealed, [one]) == b"base backup"
        theirs = pyrage.x25519.Identity.from_str(age.format_identity(one))
        assert pyrage.decrypt(sealed, [theirs]) == b"base backup"
    key_file = tmp_path / "key.txt"
    key_file.write_text(age.format_identity(others[1]) + "\n")
    cli = subprocess.run(
        [_age_tool("age"), "-d", "-i", str(key_file)], input=sealed, capture_output=True
    )
    assert cli.stdout == b"base backup"
    assert age.open_sealed(sealed, [stranger, others[0]]) == b"base backup"
    assert age.unwrap_file_key(sealed, stranger) is None
    with pytest.raises(DecryptionFailed, match="none of the given identities"):
        age.open_sealed(sealed, [stranger])


def test_file_key_path_equals_open_sealed(identity: bytes) -> None:
    """unwrap_file_key on the header alone, then open_with_file_key, gives what open_sealed does."""
    plaintext = os.urandom(2 * CHUNK + 3)
    sealed = age.seal(plaintext, [age.public_of(age.generate_identity()), age.public_of(identity)])
    header = age.header_bytes(sealed)
    assert sealed.startswith(header) and header.endswith(b"\n")
    assert header.count(b"\n---") == 1 and len(sealed) - len(header) > len(plaintext)
    file_key = age.unwrap_file_key(header, identity)
    assert file_key is not None and len(file_key) == 16
    assert age.open_with_file_key(sealed, file_key) == age.open_sealed(sealed, [identity])
    assert age.open_with_file_key(sealed, file_key) == plaintext


def test_no_recipient_is_refused() -> None:
    """Sealing to nobody is refused rather than producing a file nobody can open."""
    with pytest.raises(InvalidKey):
        age.seal(b"x", [])


def test_low_order_recipient_is_refused() -> None:
    """A low-order point as recipient would give an all-zero secret: refused."""
    with pytest.raises(InvalidKey):
        age.seal(b"x", [bytes(32)])


# ---- tampering ---------------------------------------------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("where", ["nonce", "first-chunk", "last-chunk", "last-tag"])
def test_flipped_payload_byte_is_refused(identity: bytes, where: str) -> None:
    """One flipped bit anywhere in the payload fails, by either path."""
    sealed = age.seal(os.urandom(2 * CHUNK + 100), [age.public_of(identity)])
    start = len(age.header_bytes(sealed))
    at = {
        "nonce": start + 3,
        "first-chunk": start + 16 + 10,
        "last-chunk": len(sealed) - 50,
        "last-tag": len(sealed) - 1,
    }[where]
    tampered = _flip(sealed, at)
    file_key = age.unwrap_file_key(sealed, identity)
    assert file_key is not None
    with pytest.raises(DecryptionFailed):
        age.open_sealed(tampered, [identity])
    with pytest.raises(DecryptionFailed):
        age.open_with_file_key(tampered, file_key)


@pytest.mark.parametrize("line", [0, 1, 2, 3], ids=["version", "share", "body", "mac"])
def test_flipped_header_byte_is_refused(identity: bytes, line: int) -> None:
    """A flipped byte on any header line fails (as an unknown version, a bad unwrap or the MAC)."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    starts = [0] + [i + 1 for i, c in enumerate(sealed) if c == ord("\n")]
    tampered = _flip(sealed, starts[line] + 12)
    file_key = age.unwrap_file_key(sealed, identity)
    assert file_key is not None
    with pytest.raises(DecryptionFailed):
        age.open_sealed(tampered, [identity])
    with pytest.raises(DecryptionFailed):
        age.open_with_file_key(tampered, file_key)


def test_header_edit_fails_the_mac_even_with_the_file_key(identity: bytes) -> None:
    """An added stanza (which the unwrap ignores) still fails: the MAC covers the header."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    cut = sealed.index(b"\n---") + 1
    tampered = sealed[:cut] + b"-> other-recipient\n\n" + sealed[cut:]
    file_key = age.unwrap_file_key(sealed, identity)
    assert file_key is not None
    with pytest.raises(DecryptionFailed, match="MAC"):
        age.unwrap_file_key(tampered, identity)
    with pytest.raises(DecryptionFailed, match="MAC"):
        age.open_with_file_key(tampered, file_key)


def test_swapped_stanzas_are_refused(identity: bytes) -> None:
    """Stanzas in another order, or one taken from another file, break the header MAC."""
    other = age.generate_identity()
    recipients = [age.public_of(identity), age.public_of(other)]
    sealed, second = age.seal(b"one", recipients), age.seal(b"two", recipients)

    def stanzas(data: bytes) -> tuple[bytes, list[bytes], bytes]:
        header = age.header_bytes(data)
        lines = header.split(b"\n")
        return lines[0], [b"\n".join(lines[1:3]), b"\n".join(lines[3:5])], data[len(header) - 48 :]

    version, [a, b], rest = stanzas(sealed)
    _, [a2, _], _ = stanzas(second)
    reordered = b"\n".join([version, b, a]) + b"\n" + rest
    foreign = b"\n".join([version, a2, b]) + b"\n" + rest
    assert len(reordered) == len(sealed)
    for tampered in (reordered, foreign):
        with pytest.raises(DecryptionFailed, match="MAC"):
            age.open_sealed(tampered, [identity])


@pytest.mark.parametrize(
    "cut",
    ["mid-last-chunk", "whole-last-chunk", "at-chunk-boundary", "tag-only", "nonce-only", "header"],
)
def test_truncated_file_is_refused(identity: bytes, cut: str) -> None:
    """A file cut short anywhere fails, including exactly at a chunk boundary."""
    sealed = age.seal(os.urandom(2 * CHUNK + 100), [age.public_of(identity)])
    start = len(age.header_bytes(sealed))
    keep = {
        "mid-last-chunk": len(sealed) - 10,
        "whole-last-chunk": len(sealed) - 116,
        "at-chunk-boundary": start + 16 + CHUNK + 16,
        "tag-only": start + 16 + 15,
        "nonce-only": start + 16,
        "header": start - 10,
    }[cut]
    with pytest.raises(DecryptionFailed):
        age.open_sealed(sealed[:keep], [identity])


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(CHUNK + 16), bytes(16)])
def test_extended_file_is_refused(identity: bytes, extra: bytes) -> None:
    """Bytes appended after the final chunk fail (a byte, a whole chunk, an empty 'chunk')."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    with pytest.raises(DecryptionFailed):
        age.open_sealed(sealed + extra, [identity])


def test_empty_final_chunk_is_refused_unless_the_file_is_empty(identity: bytes) -> None:
    """A full chunk then an empty final chunk, correctly encrypted, is still refused."""
    sealed = age.seal(b"", [age.public_of(identity)])
    header = age.header_bytes(sealed)
    file_key = age.unwrap_file_key(header, identity)
    assert file_key is not None
    nonce = sealed[len(header) : len(header) + 16]
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    first = aead.encrypt(bytes(11) + b"\x00", bytes(CHUNK), None)
    final = aead.encrypt((1).to_bytes(11, "big") + b"\x01", b"", None)
    crafted = header + nonce + first + final
    with pytest.raises(DecryptionFailed, match="truncated or extended"):
        age.open_with_file_key(crafted, file_key)
    assert age.open_sealed(sealed, [identity]) == b""  # the one empty final chunk allowed


def test_x25519_stanza_with_extra_argument_is_refused(identity: bytes) -> None:
    """An X25519 stanza with three arguments is refused even with a valid MAC."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    tampered = _edit_header(sealed, identity, lambda h: h.replace(b"-> X25519 ", b"-> X25519 x "))
    with pytest.raises(DecryptionFailed, match="exactly 2 arguments"):
        age.open_sealed(tampered, [identity])


def test_x25519_stanza_with_missing_argument_is_refused(identity: bytes) -> None:
    """An X25519 stanza with no share is refused."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    lines = sealed.split(b"\n", 2)
    tampered = b"\n".join([lines[0], b"-> X25519", lines[2]])
    with pytest.raises(DecryptionFailed, match="exactly 2 arguments"):
        age.open_sealed(tampered, [identity])


def _stray_bits(encoded: bytes) -> bytes:
    """The same bytes in non-canonical base64: unused low bits of the last character set."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(encoded[-1:])
    return encoded[:-1] + alphabet[last | 0b11 : (last | 0b11) + 1]


@pytest.mark.parametrize("part", ["share", "body"])
def test_non_canonical_base64_is_refused(identity: bytes, part: str) -> None:
    """Base64 with stray bits decodes to the same bytes, yet is refused (with a valid MAC)."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    lines = sealed.split(b"\n")
    at = 1 if part == "share" else 2
    words = lines[at].split(b" ")
    if at == 1:
        words[-1] = _stray_bits(words[-1])
    else:
        words = [_stray_bits(lines[at])]
    assert b" ".join(words) != lines[at]
    edited = b"\n".join([*lines[:at], b" ".join(words), *lines[at + 1 :]])
    file_key = age.unwrap_file_key(sealed, identity)
    assert file_key is not None
    tampered = _remac(edited, file_key)
    with pytest.raises(DecryptionFailed, match="non-canonical"):
        age.open_sealed(tampered, [identity])


def test_padded_base64_is_refused(identity: bytes) -> None:
    """Base64 with '=' padding is refused, though it decodes to the same bytes."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    tampered = _edit_header(
        sealed, identity, lambda h: h.replace(b"\n", b"=\n", 2).replace(b"=\n", b"\n", 1)
    )
    assert tampered.split(b"\n")[1].endswith(b"=")
    with pytest.raises(DecryptionFailed, match="base64"):
        age.open_sealed(tampered, [identity])


def test_long_body_line_is_refused(identity: bytes) -> None:
    """A stanza body line over 64 columns is malformed, even under a valid MAC."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    grease = b"-> grease\n" + b"A" * 68 + b"\n\n"
    tampered = _edit_header(sealed, identity, lambda h: h + grease)
    with pytest.raises(DecryptionFailed, match="64 columns"):
        age.open_sealed(tampered, [identity])


def test_unknown_stanzas_are_skipped(identity: bytes) -> None:
    """A stanza of another recipient type (covered by the MAC) is ignored, as the spec says."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    body = base64.b64encode(os.urandom(48)).rstrip(b"=")
    grease = b"-> example.com/enigma a1 b2\n" + body + b"\n\n"
    tampered = _edit_header(sealed, identity, lambda h: h + grease)
    assert age.open_sealed(tampered, [identity]) == b"data"
    theirs = pyrage.x25519.Identity.from_str(age.format_identity(identity))
    assert pyrage.decrypt(tampered, [theirs]) == b"data"


def test_not_an_age_file_is_refused(identity: bytes) -> None:
    """Other versions, armored files and random bytes are refused with a clear message."""
    sealed = age.seal(b"data", [age.public_of(identity)])
    with pytest.raises(DecryptionFailed, match="another version"):
        age.open_sealed(sealed.replace(b"/v1", b"/v2", 1), [identity])
    with pytest.raises(DecryptionFailed, match="armored"):
        age.open_sealed(b"-----BEGIN AGE ENCRYPTED FILE-----\n", [identity])
    with pytest.raises(DecryptionFailed, match="not an age file"):
        age.open_sealed(os.urandom(100), [identity])


def _age_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/install.sh installs Debian's age package")
    return found
