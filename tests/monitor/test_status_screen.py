"""`slipway admin:status`'s screen (cli/commands/alerts.py): the Certificates section."""

from __future__ import annotations

from typing import Any

from slipway.cli.commands.alerts import CERTIFICATES_SHOWN, render_status


def _certificate(n: int, days: float, health: str = "green") -> dict[str, Any]:
    return {
        "hostnames": [f"www{n}.example.com", f"app{n}.localhost"],
        "app_id": f"id{n}",
        "app_name": f"app{n}",
        "issuer": "internal",
        "router_id": "local",
        "not_after": 0.0,
        "days_left": days,
        "health": health,
    }


def _section(screen: str) -> list[str]:
    return screen.split("Certificates", 1)[1].strip().splitlines()


def test_the_soonest_certificates_are_shown_with_their_health() -> None:
    """A warning certificate is marked WARN with its host, app and time left; an expired
    one says so; beyond the first ten, one line counts the rest."""
    found = [_certificate(0, -1, "red"), _certificate(1, 5.5, "yellow")]
    found += [_certificate(n, 20 + n) for n in range(2, 14)]
    lines = _section(render_status({"health": "red", "certificates": found}))
    expired = next(line for line in lines if "www0.example.com" in line)
    assert "RED" in expired and "expired" in expired and "app0" in expired
    warned = next(line for line in lines if "www1.example.com (+1)" in line)
    assert "WARN" in warned and "in 5 days" in warned and "local" in warned
    assert not any("www13.example.com" in line for line in lines)
    assert lines[-1] == f"{len(found) - CERTIFICATES_SHOWN} more, all ending later."


def test_no_router_answer_is_said() -> None:
    """No certificates in the status: one line saying no router reported any."""
    assert _section(render_status({"health": "green"})) == ["No router reported certificates."]
