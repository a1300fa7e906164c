"""git:credential's installation never replaces a device git's global config points at."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slipway.cli.commands import gitcredential


def test_a_device_as_global_config_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIT_CONFIG_GLOBAL=/dev/null: `git config --global` would rename a file over the device."""
    device = tmp_path / "null"  # a /dev/null of our own: the test may break it, not the machine's
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(device))
    assert not gitcredential.install("http://127.0.0.1:5100", {"HOME": str(tmp_path)})
    assert not gitcredential.uninstall("http://127.0.0.1:5100")
    assert stat.S_ISCHR(device.lstat().st_mode)


def test_a_file_as_global_config_gets_the_helper_for_the_origin_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is scoped to the API's scheme, host and port, and removed again."""
    config = tmp_path / "gitconfig"
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path / "cli")}
    assert gitcredential.install("http://user@127.0.0.1:5100/some/path", env)
    text = config.read_text()
    assert '[credential "http://127.0.0.1:5100"]' in text and "git:credential" in text
    assert gitcredential.uninstall("http://127.0.0.1:5100")
    assert "helper" not in config.read_text()
