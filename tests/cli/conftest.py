"""Fixtures for CLI tests: an isolated config dir, environment and working directory.

Every CLI test runs outside the Slipway repository (its own git remotes must never
be read or changed) and with no credentials unless the test provides them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from slipway.cli.main import main

CLI_ENV_VARS = (
    "SLIPWAY_API_URL",
    "SLIPWAY_API_KEY",
    "SLIPWAY_APP",
    "SLIPWAY_TEAM",
    "SLIPWAY_DEBUG",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config dir, HOME and cwd; no SLIPWAY_* variables from the caller."""
    for name in CLI_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Not `home`: tests/gateway's slipway_home fixture owns tmp_path/home.
    home = tmp_path / "cli-home"
    work = tmp_path / "cli-work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SLIPWAY_CONFIG_DIR", str(home / "slipway-config"))
    # git must not read the machine's or the user's configuration.
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.chdir(work)
    return work


@dataclass(frozen=True)
class Result:
    """What one CLI invocation produced."""

    code: int
    out: str
    err: str


Invoke = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """Run `slipway ARGS...` in-process and return its exit code and output."""

    def invoke(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code=code, out=captured.out, err=captured.err)

    return invoke


def run_git(cwd: Path, *args: str) -> str:
    """Run the real git binary in `cwd` and return its stdout."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def repo(isolated: Path) -> Path:
    """A fresh git repository in the working directory."""
    run_git(isolated, "init", "-q")
    return isolated
