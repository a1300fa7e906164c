"""Choosing the app: flag, SLIPWAY_APP, or the remotes of a real git repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.cli import appselect
from slipway.cli import git as cli_git
from slipway.cli.errors import CliError
from tests.cli.conftest import run_git

API = "http://127.0.0.1:5100"


def resolve(
    cwd: Path,
    *,
    app: str | None = None,
    remote: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    return appselect.resolve(app=app, remote=remote, env=env or {}, cwd=cwd, api_url=API)


def test_app_from_the_slipway_remote(repo: Path) -> None:
    """The remote named `slipway` names the app."""
    run_git(repo, "remote", "add", "slipway", f"{API}/hello.git")
    assert resolve(repo) == "hello"


def test_flag_beats_env_and_remote(repo: Path) -> None:
    """-a/--app wins over SLIPWAY_APP and the git remote."""
    run_git(repo, "remote", "add", "slipway", f"{API}/hello.git")
    assert resolve(repo, app="flagged", env={"SLIPWAY_APP": "env"}) == "flagged"


def test_env_beats_remote(repo: Path) -> None:
    """SLIPWAY_APP wins over the git remote."""
    run_git(repo, "remote", "add", "slipway", f"{API}/hello.git")
    assert resolve(repo, env={"SLIPWAY_APP": "from-env"}) == "from-env"


def test_named_remote_flag_selects_that_remote(repo: Path) -> None:
    """-r/--remote picks the app of that remote, even over SLIPWAY_APP."""
    run_git(repo, "remote", "add", "slipway", f"{API}/hello.git")
    run_git(repo, "remote", "add", "staging", f"{API}/hello-staging.git")
    assert resolve(repo, remote="staging", env={"SLIPWAY_APP": "env"}) == "hello-staging"


def test_slipway_remote_on_another_host_still_counts(repo: Path) -> None:
    """The `slipway` remote is trusted whatever host it names."""
    run_git(repo, "remote", "add", "slipway", "https://paas.example.org/api/billing.git")
    assert resolve(repo) == "billing"


def test_single_remote_on_the_api_host_is_used(repo: Path) -> None:
    """Without a `slipway` remote, the one remote pointing at the API's host decides."""
    run_git(repo, "remote", "add", "origin", "https://github.com/acme/hello.git")
    run_git(repo, "remote", "add", "prod", f"{API}/hello-prod.git")
    assert resolve(repo) == "hello-prod"


def test_two_apps_on_the_api_host_are_ambiguous(repo: Path) -> None:
    """Two remotes naming different apps give one error listing both."""
    run_git(repo, "remote", "add", "prod", f"{API}/hello-prod.git")
    run_git(repo, "remote", "add", "staging", f"{API}/hello-staging.git")
    with pytest.raises(CliError) as caught:
        resolve(repo)
    message = caught.value.message
    assert "hello-prod (remote prod)" in message
    assert "hello-staging (remote staging)" in message
    assert "\n" not in message


def test_no_remote_is_a_clear_error(repo: Path) -> None:
    """A repository without Slipway remotes says how to choose an app."""
    run_git(repo, "remote", "add", "origin", "https://github.com/acme/hello.git")
    with pytest.raises(CliError, match=r"No app specified: use -a/--app NAME"):
        resolve(repo)


def test_outside_a_repository_is_a_clear_error(isolated: Path) -> None:
    """Outside any repository the same error appears, not a git failure."""
    with pytest.raises(CliError, match=r"No app specified"):
        resolve(isolated)


def test_missing_named_remote_is_an_error(repo: Path) -> None:
    """-r naming a remote that does not exist says so."""
    with pytest.raises(CliError, match="no git remote named 'nope'"):
        resolve(repo, remote="nope")


def test_slipway_remote_that_names_no_app_is_an_error(repo: Path) -> None:
    """A `slipway` remote whose URL does not end in <app>.git is reported, not guessed."""
    run_git(repo, "remote", "add", "slipway", f"{API}/")
    with pytest.raises(CliError, match="does not name an app"):
        resolve(repo)


def test_remote_name_with_dots_is_read_whole(repo: Path) -> None:
    """A remote called `my.remote` is listed under its full name."""
    run_git(repo, "remote", "add", "my.remote", f"{API}/dotted.git")
    assert cli_git.remotes(repo) == [cli_git.Remote(name="my.remote", url=f"{API}/dotted.git")]


def test_set_remote_adds_then_updates(repo: Path) -> None:
    """set_remote runs `git remote add` the first time and `set-url` afterwards."""
    assert cli_git.set_remote(repo, "slipway", f"{API}/one.git") == "added"
    assert cli_git.set_remote(repo, "slipway", f"{API}/two.git") == "updated"
    assert run_git(repo, "remote", "get-url", "slipway").strip() == f"{API}/two.git"


def test_set_remote_outside_a_repository_fails_clearly(isolated: Path) -> None:
    """Adding a remote where there is no repository asks for `git init`."""
    with pytest.raises(CliError, match="is not a git repository; run `git init` first"):
        cli_git.set_remote(isolated, "slipway", f"{API}/one.git")
