"""Pure pieces: line formats, syslog framing, cgroup paths."""

from __future__ import annotations

from slipway.contracts.log_shipper import LogEntry
from slipway.contracts.logs import RouterAccess
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.receiver import container_of_cgroup

CID = "4818ed0f9e4b7821221d0e09e9fa4374114d59f491ad0c09050497cc2a18deb6"


def entry(text: str, *, stderr: bool = False) -> LogEntry:
    return LogEntry(
        host="h",
        seq=1,
        timestamp=1795813200.123456,
        source="app",
        dyno="web.1",
        text=text,
        stderr=stderr,
    )


def test_a_line_reads_like_heroku_logs() -> None:
    """`<iso timestamp with microseconds> app[web.1]: text`."""
    assert formats.text_line(entry("hi")) == "2026-11-27T21:00:00.123456+00:00 app[web.1]: hi"


def test_a_router_error_line_names_its_code() -> None:
    """The router's own answers read `at=error code=H14 desc="No web processes running"`."""
    access = RouterAccess(
        app_id="a",
        timestamp=0,
        method="GET",
        path='/a"b',
        host="h",
        request_id="r",
        fwd="1.2.3.4",
        dyno="",
        connect_ms=0,
        service_ms=0,
        status=503,
        bytes=0,
        code="H14",
    )
    text = formats.router_text(access)
    assert text.startswith('at=error code=H14 desc="No web processes running" method=GET')
    assert 'path="/a\\"b"' in text and "status=503" in text


def test_syslog_frames_count_bytes_not_characters() -> None:
    """RFC 6587: the length prefix is the UTF-8 byte count of an RFC 5424 message."""
    message = formats.syslog_message(entry("héllo"), "d.tok")
    assert message == b"<190>1 2026-11-27T21:00:00.123456+00:00 d.tok app web.1 - - h\xc3\xa9llo"
    assert formats.octet_frame(message) == b"%d %b" % (len(message), message)
    assert formats.syslog_message(entry("x", stderr=True), "d").startswith(b"<187>1 ")


def test_l10_reads_like_heroku_logplex() -> None:
    """Heroku's wording: `Error L10 (output buffer overflow): N messages dropped since <iso>.`"""
    text = formats.l10_text(500, 1795813200.5)
    assert text == (
        "Error L10 (output buffer overflow): 500 messages dropped since"
        " 2026-11-27T21:00:00.500000+00:00."
    )


def test_a_container_is_found_in_cgroupfs_and_systemd_paths() -> None:
    """cgroup v1 with cgroupfs, cgroup v2 with systemd; a host process has none."""
    v1 = f"12:memory:/docker/{CID}\n11:pids:/docker/{CID}\n1:name=systemd:/docker/{CID}\n"
    assert container_of_cgroup(v1) == CID
    assert container_of_cgroup(f"0::/system.slice/docker-{CID}.scope\n") == CID
    assert container_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n") is None
    assert container_of_cgroup(f"0::/docker/{CID}/init\n") is None


def test_a_process_in_two_containers_at_once_is_nobody() -> None:
    """Two different ids in one cgroup file: refused rather than guessed."""
    other = "f" * 64
    assert container_of_cgroup(f"12:memory:/docker/{CID}\n11:pids:/docker/{other}\n") is None
