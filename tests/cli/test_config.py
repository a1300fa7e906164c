"""The credentials file: location, permissions, and environment overrides."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slipway.cli import config
from slipway.cli.errors import CliError, UsageError


def test_credentials_file_is_private(tmp_path: Path) -> None:
    """The file is written 0600 and its new directory 0700, even under a permissive umask."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path / "conf")}
    previous = os.umask(0)
    try:
        path = config.save(config.Credentials(api_url="http://h:1", token="t", email="e"), env)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path == tmp_path / "conf" / "credentials.json"


def test_saved_credentials_load_back(tmp_path: Path) -> None:
    """What is saved is what is loaded."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path)}
    saved = config.Credentials(api_url="http://h:1", token="secret", email="a@b.c")
    config.save(saved, env)
    assert config.load_stored(env) == saved


def test_default_location_is_under_home(tmp_path: Path) -> None:
    """Without SLIPWAY_CONFIG_DIR the file lives in ~/.config/slipway."""
    path = config.credentials_path({"HOME": str(tmp_path)})
    assert path == tmp_path / ".config" / "slipway" / "credentials.json"


def test_environment_overrides_stored_values(tmp_path: Path) -> None:
    """SLIPWAY_API_KEY and SLIPWAY_API_URL replace the stored token and URL."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path)}
    config.save(config.Credentials(api_url="http://stored:1", token="stored"), env)
    env |= {"SLIPWAY_API_KEY": "from-env", "SLIPWAY_API_URL": "http://env:2/"}
    assert config.effective(env) == config.Credentials(api_url="http://env:2", token="from-env")


def test_no_file_means_default_url_and_no_token(tmp_path: Path) -> None:
    """Without a file or variables there is no token and the local default API."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path)}
    assert config.effective(env) == config.Credentials(api_url=config.DEFAULT_API_URL)


def test_corrupt_file_is_one_clear_error(tmp_path: Path) -> None:
    """A damaged file asks for a new login instead of raising a traceback."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path)}
    config.credentials_path(env).write_text("{not json")
    with pytest.raises(CliError, match="is not valid JSON; run `slipway login` again"):
        config.load_stored(env)


def test_delete_reports_whether_there_was_a_file(tmp_path: Path) -> None:
    """Logout removes the file once; a second time there is nothing to remove."""
    env = {"SLIPWAY_CONFIG_DIR": str(tmp_path)}
    config.save(config.Credentials(api_url="http://h:1", token="t"), env)
    assert config.delete(env) is True
    assert config.delete(env) is False


@pytest.mark.parametrize("url", ["127.0.0.1:5100", "ftp://h", "http://", ""])
def test_api_url_must_be_http(url: str) -> None:
    """An API URL without an http(s) scheme and host is a usage error."""
    with pytest.raises(UsageError, match="must look like http://host:port"):
        config.normalize_api_url(url)
