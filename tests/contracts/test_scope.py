"""Scopes: the default one keeps the names installations already have; others fit the kernel."""

from __future__ import annotations

import pytest

from slipway.contracts.scope import Scope
from slipway.libs.service.settings import Settings, SettingsError, load_settings

APP = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_the_default_scope_keeps_the_names_made_before_scopes() -> None:
    """`scripts/up` still finds its networks, bridges, chain, pool and dynos' label."""
    scope = Scope()
    assert scope.network(APP) == f"slipway-app-{APP}"
    assert scope.bridge(APP) == "slw0f1e2d3c4b5a"
    assert scope.chain == "SLIPWAY-ISOLATION"
    assert scope.pool == "10.210.0.0/16"
    assert scope.managed == "true"
    assert scope.build_network == "slipway-builds"


def test_another_scope_shares_no_name_with_the_default_one() -> None:
    """Every shared-machine name differs, the same app id included."""
    default, other = Scope(), Scope("tst1234567")
    for name in ("chain", "pool", "managed", "managed_label", "build_network", "prefix"):
        assert getattr(default, name) != getattr(other, name), name
    assert default.network(APP) != other.network(APP)
    assert default.bridge(APP) != other.bridge(APP)
    assert not other.network(APP).startswith(default.network(""))


def test_the_longest_scope_fits_iptables_and_interface_names() -> None:
    """16 characters: the chain holds 28, the bridge 15."""
    scope = Scope("a" * 16)
    assert len(scope.chain) <= 28
    assert len(scope.bridge(APP)) <= 15


@pytest.mark.parametrize("name", ["a" * 17, "Upper", "-dash", "has space", "true"])
def test_an_unusable_scope_is_refused(name: str) -> None:
    """Too long, not lowercase, or the default's own label value."""
    with pytest.raises(ValueError, match="SLIPWAY_SCOPE"):
        Scope(name)


def test_a_bad_scope_setting_names_its_variable() -> None:
    """SLIPWAY_SCOPE is checked when the settings are read, before anything is made."""
    with pytest.raises(SettingsError, match="SLIPWAY_"):
        load_settings(Settings, {"SLIPWAY_SCOPE": "No/Good"})
    assert load_settings(Settings, {"SLIPWAY_SCOPE": "tst1"}).scoped == Scope("tst1")
