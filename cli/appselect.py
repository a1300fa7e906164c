"""Which app a command acts on, chosen the way the Heroku CLI chooses it.

In order: `-a/--app NAME`; `-r/--remote NAME` (that git remote's app);
SLIPWAY_APP; the git remote named `slipway`; otherwise the one app that the
repository's remotes on the API's host point at. No app, or several, is an error
that says how to pick one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from slipway.cli import git
from slipway.cli.errors import CliError

HOW_TO_CHOOSE = (
    "use -a/--app NAME, set SLIPWAY_APP, or add a git remote with `slipway git:remote -a NAME`"
)


def from_remotes(
    found: Sequence[git.Remote], *, api_url: str, remote: str | None = None
) -> str | None:
    """The app named by git remotes, or None if they name none; several is an error."""
    if remote is not None:
        chosen = [r for r in found if r.name == remote]
        if not chosen:
            raise CliError(f"There is no git remote named {remote!r} in this repository.")
        return _single(chosen, why=f"git remote {remote!r}", required=True)
    named = [r for r in found if r.name == git.DEFAULT_REMOTE]
    if named:
        return _single(named, why=f"git remote {git.DEFAULT_REMOTE!r}", required=True)
    api_host = git.host_of(api_url)
    on_api = [r for r in found if git.host_of(r.url) == api_host and git.app_from_url(r.url)]
    return _single(on_api, why="git remotes", required=False)


def resolve(
    *,
    app: str | None,
    remote: str | None,
    env: Mapping[str, str],
    cwd: Path,
    api_url: str,
) -> str:
    """The app to act on, or a `CliError` naming the ways to choose one."""
    if app:
        return app
    if remote is None and env.get("SLIPWAY_APP"):
        return env["SLIPWAY_APP"]
    inferred = from_remotes(git.remotes(cwd), api_url=api_url, remote=remote)
    if inferred:
        return inferred
    raise CliError(f"No app specified: {HOW_TO_CHOOSE}.")


def _single(candidates: Sequence[git.Remote], *, why: str, required: bool) -> str | None:
    apps: dict[str, str] = {}
    for candidate in candidates:
        name = git.app_from_url(candidate.url)
        if name is None:
            if required:
                raise CliError(
                    f"The URL of {why} ({candidate.url}) does not name an app (…/<app>.git)."
                )
            continue
        apps.setdefault(name, candidate.name)
    if len(apps) > 1:
        listed = ", ".join(f"{name} (remote {remote})" for name, remote in sorted(apps.items()))
        raise CliError(f"Several apps in {why}: {listed}; {HOW_TO_CHOOSE}.")
    return next(iter(apps), None)
