"""The command line itself: help, usage errors and failures as one line, without a server."""

from __future__ import annotations

import io
import socket
import sys

import pytest

from slipway.cli import commands
from slipway.cli.registry import COMMANDS
from tests.cli.conftest import Invoke


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _all_commands() -> list[str]:
    commands.load()
    return sorted(COMMANDS)


def test_help_lists_every_command(cli: Invoke) -> None:
    """`slipway help` names each command with its summary."""
    result = cli("help")
    assert result.code == 0
    for name, cmd in COMMANDS.items():
        assert f"{name} " in result.out
        assert cmd.summary in result.out


@pytest.mark.parametrize("name", _all_commands())
def test_every_command_has_help(cli: Invoke, name: str) -> None:
    """`slipway COMMAND --help` prints a usage line and exits 0."""
    result = cli(name, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: slipway {name}")
    assert result.err == ""


def test_help_for_a_topic_lists_its_commands(cli: Invoke) -> None:
    """`slipway help auth` lists the auth:* commands."""
    result = cli("help", "auth")
    assert result.code == 0
    assert "auth:token" in result.out
    assert "auth:whoami" in result.out


def test_topic_command_help_mentions_its_siblings(cli: Invoke) -> None:
    """`slipway apps --help` also lists the other apps:* commands."""
    result = cli("apps", "--help")
    assert "apps:create" in result.out
    assert "apps:destroy" in result.out


def test_unknown_command_suggests_a_close_one(cli: Invoke) -> None:
    """A mistyped command is a usage error (2) with a suggestion, in one line."""
    result = cli("apps:craete")
    assert result.code == 2
    assert result.err == (
        " ▸    apps:craete is not a slipway command. Perhaps you meant apps:create? "
        "See `slipway help`.\n"
    )


def test_missing_argument_is_one_line_usage_error(cli: Invoke) -> None:
    """argparse's complaint becomes one line and exit status 2."""
    result = cli("config:get")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "the following arguments are required: KEY" in result.err
    assert "`slipway config:get --help`" in result.err


def test_bad_scale_spec_fails_before_any_request(cli: Invoke) -> None:
    """ps:scale with a malformed spec exits 2 with the syntax, even with no login."""
    result = cli("ps:scale", "web=lots:", "-a", "hello")
    assert result.code == 2
    assert result.err == (
        " ▸    Invalid scale argument 'web=lots:': use TYPE=QUANTITY[:SIZE], TYPE+N, TYPE-N "
        "or TYPE=SIZE (e.g. web=2:standard-2x worker+1).\n"
    )


def test_not_logged_in_is_one_line(cli: Invoke) -> None:
    """Without a token, commands that call the API say how to log in."""
    result = cli("apps")
    assert result.code == 1
    assert result.err == " ▸    Not logged in. Run `slipway login` or set SLIPWAY_API_KEY.\n"


def test_unreachable_api_is_one_line(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection refused names the URL and the cause, without a traceback."""
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("SLIPWAY_API_URL", url)
    monkeypatch.setenv("SLIPWAY_API_KEY", "token")
    result = cli("apps")
    assert result.code == 1
    assert result.err == f" ▸    cannot reach the Slipway API at {url}: connection refused\n"


def test_destroy_refuses_a_wrong_confirmation(cli: Invoke) -> None:
    """--confirm must repeat the app's name; nothing is sent otherwise."""
    result = cli("apps:destroy", "-a", "hello", "--confirm", "hallo")
    assert result.code == 1
    assert result.err == " ▸    Confirmation 'hallo' did not match hello. Aborted.\n"


def test_destroy_without_confirmation_stops(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --confirm and nothing typed, destroy stops with one line."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    result = cli("apps:destroy", "-a", "hello")
    assert result.code == 1
    assert result.err.endswith(
        " ▸    Confirmation required: type hello, or pass --confirm hello.\n"
    )


def test_app_and_team_together_are_a_usage_error(cli: Invoke) -> None:
    """audit takes an app or a team, not both."""
    result = cli("audit", "-a", "hello", "--team", "acme")
    assert result.code == 2
    assert "not both" in result.err


def test_login_rejects_an_empty_token(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """Piping nothing to login is an error, and nothing is stored."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    result = cli("login", "--api-url", "http://127.0.0.1:1")
    assert result.code == 1
    assert "No token given" in result.err
    assert cli("auth:token").code == 1


def test_auth_token_prints_the_environment_token(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLIPWAY_API_KEY is the token in use when set."""
    monkeypatch.setenv("SLIPWAY_API_KEY", "abc123")
    result = cli("auth:token")
    assert (result.code, result.out) == (0, "abc123\n")


def test_version(cli: Invoke) -> None:
    """`slipway --version` names the CLI."""
    assert cli("--version").out.startswith("slipway-cli/")
