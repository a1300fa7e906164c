"""The browser's audit verification (auditchain.js) reaches the CLI's verdict on any chain.

A chain is made here with `slipway.libs.auditchain` and an Ed25519 key, then tampered
with in each way a platform operator could; Chromium verifies it with WebCrypto and
must give exactly the verdict `auditchain.verify` gives: ok, or broken at the same
entry for the same reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver

from slipway.libs import auditchain
from tests.dashboard.conftest import Browser
from tests.dashboard.statics import serving

Chain = dict[str, Any]  # {"entries": [...with hash], "checkpoints": [...], "keys": [...]}

TEAM = "5d1f6a1e-0000-4000-8000-000000000001"
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def entry(seq: int) -> auditchain.AuditEntry:
    """Entries that exercise the canonical form: nulls, unicode, control characters, key order."""
    details = {"zeta": "last", "alpha": "first", "é": "accent", "😀": "astral", "\uffff": "bmp"}
    return auditchain.AuditEntry(
        seq=seq,
        team_id=TEAM,
        at=f"2026-12-03T19:{seq:02d}:00Z",
        actor="alice@example.com" if seq % 2 else "service:scheduler",
        action="config.update" if seq % 3 else "app.create",
        app=None if seq == 2 else f"hello-{seq}",
        source_ip=None if seq % 2 else "127.0.0.1",
        request_id=None,
        details=details if seq != 3 else {"line": 'quote " back\\slash \n tab\t \x01 \u2028 <b>'},
    )


def sign(cp_seq: int, head: str, key: Ed25519PrivateKey = KEY, key_id: str = "k1") -> Any:
    message = auditchain.checkpoint_message(TEAM, cp_seq, head)
    return {
        "team_id": TEAM,
        "seq": cp_seq,
        "head": head,
        "at": "2026-12-03T20:00:00Z",
        "key_id": key_id,
        "signature": key.sign(message).hex(),
    }


def public(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def good_chain(count: int = 6) -> Chain:
    entries, previous = [], auditchain.GENESIS
    for seq in range(1, count + 1):
        made = entry(seq)
        previous = auditchain.link(previous, made)
        entries.append({**msgspec.to_builtins(made), "hash": previous.hex()})
    checkpoints = [sign(3, entries[2]["hash"]), sign(count, entries[-1]["hash"])]
    keys = [{"key_id": "k1", "algorithm": "ed25519", "public_key": public(KEY)}]
    return {"entries": entries, "checkpoints": checkpoints, "keys": keys}


def python_verdict(chain: Chain) -> dict[str, Any]:
    """What `slipway audit --verify` concludes (the CLI's own reading of the raw JSON)."""
    from slipway.cli.commands.audit import verify_chain

    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in chain["keys"]}
    verdict = verify_chain(chain["entries"], chain["checkpoints"], keys)
    return msgspec.to_builtins(verdict)  # type: ignore[no-any-return]


def js_verdict(driver: webdriver.Chrome, chain: Chain) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_async_script(
        """
        const [chain, done] = arguments;
        import("/dashboard/auditchain.js")
          .then((m) => m.verifyChain(chain.entries, chain.checkpoints, chain.keys))
          .then(done, (error) => done({ error: String(error) }));
        """,
        chain,
    )
    return found


def edited(change: Callable[[Chain], None]) -> Chain:
    chain = copy.deepcopy(good_chain())
    change(chain)
    return chain


def _set(chain: Chain, index: int, field: str, value: Any) -> None:
    chain["entries"][index][field] = value


TAMPERINGS: dict[str, Callable[[Chain], None]] = {
    "intact": lambda c: None,
    "an actor rewritten": lambda c: _set(c, 3, "actor", "mallory@example.com"),
    "a detail rewritten": lambda c: c["entries"][2]["details"].update(line="other"),
    "a null made empty": lambda c: _set(c, 1, "app", ""),
    "an entry removed": lambda c: c["entries"].pop(2),
    "the newest entries cut": lambda c: c["entries"].__delitem__(slice(4, None)),
    "an unsigned entry appended": lambda c: c["entries"].append(
        {**c["entries"][-1], "seq": 7, "hash": "00" * 32}
    ),
    "a forged signature": lambda c: c["checkpoints"][0].update(signature="ab" * 64),
    "a checkpoint by another key": lambda c: c["checkpoints"].__setitem__(
        1, sign(6, c["entries"][5]["hash"], OTHER_KEY)
    ),
    "a checkpoint by an unknown key": lambda c: c["checkpoints"].__setitem__(
        1, sign(6, c["entries"][5]["hash"], OTHER_KEY, "k2")
    ),
    "a signed head that differs": lambda c: c["checkpoints"].__setitem__(0, sign(3, "11" * 32)),
    "an unreadable entry": lambda c: c["entries"][4].pop("actor"),
}


@pytest.fixture(scope="module")
def page(chromium_module: Browser) -> Iterator[webdriver.Chrome]:
    with serving() as url:
        driver = chromium_module()
        driver.get(url + "/")
        yield driver


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_the_browser_verdict_is_the_cli_verdict(page: webdriver.Chrome, tampering: str) -> None:
    """Chromium's verdict on the chain equals `auditchain.verify`'s, tampered or not."""
    chain = edited(TAMPERINGS[tampering])
    expected, found = python_verdict(chain), js_verdict(page, chain)
    if tampering == "an unreadable entry":  # the reason quotes each side's own parser
        assert found["reason"].startswith("entry cannot be read (")
        assert expected["reason"].startswith("entry cannot be read (")
        found["reason"] = expected["reason"]
    assert found == expected
    assert expected["ok"] is (tampering == "intact")  # the cases do what they say


def test_a_tampered_chain_is_reported_broken_at_the_entry(page: webdriver.Chrome) -> None:
    """An actor rewritten in entry 4 is reported as the break, with the hash reason."""
    chain = edited(TAMPERINGS["an actor rewritten"])
    verdict = js_verdict(page, chain)
    assert verdict["ok"] is False
    assert verdict["broken_at"] == 4
    assert verdict["reason"] == "hash does not match its content"
