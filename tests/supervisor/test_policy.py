"""The supervisor's pure parts: restart delays and the order services start in."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.libs.supervisor import Backoff, ChildSpec, discover_services, service_module


def test_backoff_doubles_up_to_the_cap() -> None:
    """Quick crashes in a row wait 0.5s, 1s, 2s, ... and never more than the cap."""
    backoff = Backoff(initial=0.5, maximum=4.0, reset_after=60.0)
    assert [backoff.delay_after(0.1) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_resets_after_a_healthy_run() -> None:
    """A crash after a run longer than reset_after waits the first delay again."""
    backoff = Backoff(initial=0.5, maximum=30.0, reset_after=60.0)
    assert [backoff.delay_after(1.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert backoff.delay_after(61.0) == 0.5
    assert backoff.delay_after(1.0) == 1.0


def test_discovery_finds_packages_with_main_in_start_order(tmp_path: Path) -> None:
    """Keyring starts first, unknown services next (sorted), the gateway last; others ignored."""
    for name, runnable in [
        ("gateway", True),
        ("zeta", True),
        ("keyring", True),
        ("registry_proxy", True),
        ("alpha", True),
        ("half_written", False),
        ("_private", True),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").touch()
        if runnable:
            (tmp_path / name / "__main__.py").touch()
    (tmp_path / "loose.py").touch()
    assert discover_services([str(tmp_path)]) == [
        "keyring",
        "registry-proxy",
        "alpha",
        "zeta",
        "gateway",
    ]


def test_service_names_map_to_modules() -> None:
    """Service names use dashes, their packages underscores."""
    assert service_module("registry-proxy") == "slipway.services.registry_proxy"


@pytest.mark.parametrize("name", ["", "nats-server", "supervisor", "a/b"])
def test_child_names_that_would_clash_are_refused(name: str) -> None:
    """Names that collide with the supervisor's own files, or are not file names, are refused."""
    with pytest.raises(ValueError, match="child name"):
        ChildSpec(name, ("true",))
