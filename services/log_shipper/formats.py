"""How a line looks: `slipway logs` text, Heroku's router and platform lines, syslog frames.

    2026-11-27T21:00:00.123456+00:00 app[web.1]: text

Pure functions, no I/O: the receiver, the drains and the gateway all format
through here, so a line reads the same everywhere.
"""

from __future__ import annotations

import datetime

from slipway.contracts.log_shipper import LogEntry
from slipway.contracts.logs import RouterAccess

_UTC = datetime.UTC

# RFC 5424 PRI = facility * 8 + severity; Heroku uses local7 (23) for every line.
_FACILITY_LOCAL7 = 23
_SEVERITY_INFO = 6
_SEVERITY_ERR = 3


def iso(timestamp: float) -> str:
    """`2026-11-27T21:00:00.123456+00:00`, the timestamp of every line."""
    return datetime.datetime.fromtimestamp(timestamp, _UTC).isoformat(timespec="microseconds")


def text_line(entry: LogEntry) -> str:
    """One line as `slipway logs` prints it (no newline)."""
    return f"{iso(entry.timestamp)} {entry.source}[{entry.dyno}]: {entry.text}"


def router_text(access: RouterAccess) -> str:
    """Heroku's router line for one request (`at=error code=H14 ...` when the router answered)."""
    head = f"at=error code={access.code} desc=" if access.code else "at=info "
    if access.code:
        head += f'"{_describe(access.code)}" '
    return (
        f'{head}method={access.method} path="{_quote(access.path)}" host={access.host} '
        f'request_id={access.request_id} fwd="{_quote(access.fwd)}" '
        f"dyno={access.dyno} connect={access.connect_ms}ms service={access.service_ms}ms "
        f"status={access.status} bytes={access.bytes} protocol={access.protocol}"
    )


_ROUTER_CODES = {
    "H10": "App crashed",
    "H12": "Request timeout",
    "H13": "Connection closed without response",
    "H14": "No web processes running",
    "H20": "App boot timeout",
    "H80": "Maintenance mode",
    "H99": "Platform error",
}


def _describe(code: str) -> str:
    return _ROUTER_CODES.get(code, "Router error")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def syslog_message(entry: LogEntry, drain_token: str) -> bytes:
    """One RFC 5424 message as Heroku's drains send it (HOSTNAME is the drain token).

    `<190>1 2026-11-27T21:00:00.123456+00:00 d.1234 app web.1 - - text`, with
    APP-NAME the source and PROCID the dyno; no structured data ("-").
    """
    severity = _SEVERITY_ERR if entry.stderr else _SEVERITY_INFO
    pri = _FACILITY_LOCAL7 * 8 + severity
    text = entry.text.replace("\n", " ")
    header = f"<{pri}>1 {iso(entry.timestamp)} {drain_token} {entry.source} {entry.dyno} - -"
    return f"{header} {text}".encode()


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: `<length> <message>`."""
    return b"%d %b" % (len(message), message)


def l10_text(count: int, since: float) -> str:
    """Heroku's logplex line for lines dropped before they reached it (`heroku[logplex]`)."""
    return f"Error L10 (output buffer overflow): {count} messages dropped since {iso(since)}."


def memory_line(sample_fields: dict[str, str]) -> str:
    """The text of a metrics line: `source=web.1 dyno=... sample#memory_total=12.34MB ...`."""
    return " ".join(f"{key}={value}" for key, value in sample_fields.items())
