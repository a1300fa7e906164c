"""The probe marker on its own: HAProxy's logged digest, older lines, the joiner's check."""

from __future__ import annotations

import base64
import hashlib

from slipway.libs.haproxy import ACCESS_TAG, parse_access
from slipway.services.network_wirer.haproxy.access import AccessJoiner
from slipway.services.network_wirer.routes import AppRoute
from slipway.services.network_wirer.uptime import marker_digest, new_marker, probe_host


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def line(*extra: str) -> bytes:
    fields = [
        ACCESS_TAG,
        "1800000000.123",
        "127.0.0.1",
        "GET",
        b64("/"),
        b64("hello.localhost"),
        b64("request-id-0123456789"),
        "up",
        "be_0",
        "web.1--abcdef0123",
        "0",
        "2",
        "3",
        "200",
        "120",
        "----",
        "0",
        *extra,
    ]
    return " ".join(fields).encode()


def test_the_digest_is_what_haproxy_sha2_base64_writes() -> None:
    """sha2(256),base64 of the header value: 44 characters, the same as hashlib's."""
    marker = new_marker()
    assert len(marker) >= 43  # 256 bits, URL-safe
    expected = base64.b64encode(hashlib.sha256(marker.encode()).digest()).decode()
    assert marker_digest(marker) == expected and len(expected) == 44
    assert new_marker() != marker


def test_lines_of_an_older_configuration_still_parse_without_a_marker() -> None:
    """17 fields (HAProxy not yet reloaded): parsed, no marker; 18: the digest; '-': none."""
    old = parse_access(line())
    assert old is not None and old.probe == ""
    marked = parse_access(line("abc+/="))
    assert marked is not None and marked.probe == "abc+/="
    unmarked = parse_access(line("-"))
    assert unmarked is not None and unmarked.probe == ""
    assert parse_access(line("a", "b")) is None


def test_only_the_exact_digest_hides_a_line() -> None:
    """The probe's digest drops the line; another digest or none is an ordinary request."""
    marker = new_marker()
    joiner = AccessJoiner(probe_digest=marker_digest(marker))
    joiner.update([AppRoute(app_id="app-1", app_name="hello", hosts=("hello.localhost",))])
    probe = parse_access(line(marker_digest(marker)))
    forged = parse_access(line(marker_digest("guessed")))
    plain = parse_access(line("-"))
    assert probe is not None and forged is not None and plain is not None
    assert joiner.record(probe) is None
    assert joiner.probes_dropped == 1
    assert joiner.record(forged) is not None
    assert joiner.record(plain) is not None
    # A joiner without a digest (never the service's) hides nothing.
    blind = AccessJoiner()
    blind.update([AppRoute(app_id="app-1", app_name="hello", hosts=("hello.localhost",))])
    assert blind.record(probe) is not None


def test_the_probe_reaches_the_router_on_its_own_host() -> None:
    """Every address → loopback; a named address is used as it is (IPv6 in brackets)."""
    assert probe_host("") == "127.0.0.1"
    assert probe_host("0.0.0.0") == "127.0.0.1"  # noqa: S104 - a setting's value, not a bind
    assert probe_host("::") == "[::1]"
    assert probe_host("127.0.0.2") == "127.0.0.2"
    assert probe_host("fd00::1") == "[fd00::1]"
