"""Credentials: signed, scoped, expiring; the signing key private to the service."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slipway.services.registry_proxy.credentials import Issuer, Rejected, load_key
from slipway.services.registry_proxy.errors import RegistryProxyError
from slipway.services.registry_proxy.proxy import basic_password


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(load_key(tmp_path / "signing.key"))


def test_a_token_carries_its_app_access_and_expiry(issuer: Issuer) -> None:
    """What was issued is what a check returns."""
    grant = issuer.issue("app-1", "push", 60, now=1000.0)
    checked = issuer.check(grant, now=1059.0)
    assert (checked.app_id, checked.access, checked.expires_at) == ("app-1", "push", 1060)


def test_an_expired_token_is_rejected(issuer: Issuer) -> None:
    """At its expiry second the token stops working."""
    token = issuer.issue("app-1", "pull", 60, now=1000.0)
    with pytest.raises(Rejected, match="expired"):
        issuer.check(token, now=1060.0)


def test_another_key_does_not_accept_the_token(issuer: Issuer, tmp_path: Path) -> None:
    """A token from one service's key means nothing to another's."""
    other = Issuer(load_key(tmp_path / "other.key"))
    with pytest.raises(Rejected, match="bad signature"):
        other.check(issuer.issue("app-1", "push", 60))


@pytest.mark.parametrize("token", ["", "v1.x", "v2.a.b", "v1.!!!.abc", "v1.e30.AAAA"])
def test_garbage_is_rejected(issuer: Issuer, token: str) -> None:
    """Malformed tokens are refused, never crash the check."""
    with pytest.raises(Rejected):
        issuer.check(token)


def test_pull_allows_reads_only_and_nobody_deletes(issuer: Issuer) -> None:
    """Pull: GET, HEAD. Push: also POST, PUT, PATCH. DELETE: neither."""
    pull = issuer.check(issuer.issue("a", "pull", 60))
    push = issuer.check(issuer.issue("a", "push", 60))
    assert [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if pull.allows(m)] == [
        "GET",
        "HEAD",
    ]
    assert not push.allows("DELETE")
    assert all(push.allows(m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH"))


def test_the_key_is_created_private_and_reused(tmp_path: Path) -> None:
    """Created 0600 on first use, read back the same afterwards."""
    path = tmp_path / "signing.key"
    key = load_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(path) == key


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key file others could read is not used: the service says how to fix it."""
    path = tmp_path / "signing.key"
    load_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(RegistryProxyError, match="chmod 600"):
        load_key(path)


@pytest.mark.parametrize(
    ("header", "password"),
    [("Basic dXNlcjpwYXNz", "pass"), ("basic dXNlcjpwOmFzcw==", "p:ass")],
)
def test_basic_auth_header_is_parsed(header: str, password: str) -> None:
    """The password is everything after the first colon."""
    assert basic_password(header) == password


@pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!", "Basic dXNlcg=="])
def test_other_authorization_headers_are_rejected(header: str) -> None:
    """Bearer tokens, bad base64 and a missing colon are refused."""
    with pytest.raises(Rejected):
        basic_password(header)


def test_tokens_are_unique_even_within_one_second(issuer: Issuer) -> None:
    """Each credential has its own id (push sessions are keyed by it)."""
    now = time.time()
    first = issuer.check(issuer.issue("a", "push", 60, now=now))
    second = issuer.check(issuer.issue("a", "push", 60, now=now))
    assert first.token_id != second.token_id
